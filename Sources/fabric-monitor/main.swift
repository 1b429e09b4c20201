// fabric-monitor: supervises one workload process so that its output, its exit status and the process itself
// survive a restart of the control plane (in the style of podman's conmon). Glibc only, to keep its RSS tiny.
//
// fabric-monitor --dir DIR --log-bytes-max N [--cgroup-memory-bytes B] [--cgroup-cpu-millis M]
//                [--cgroup-name NAME] [--workdir W] -- program args...
//
// Writes DIR/state.json (pids, start times), DIR/output.log (+ output.log.1), DIR/monitor.log and, when the
// workload has ended, DIR/exit.json ({"code":N} or {"signal":S}; with "error" when it could not start).
import Glibc

switch Options.parse(Array(CommandLine.arguments.dropFirst())) {
case .failure(let error):
    writeAll(2, "fabric-monitor: \(error.message)\n\(usage)\n")
    exit(2)
case .success(let options):
    exit(runMonitor(options))
}
