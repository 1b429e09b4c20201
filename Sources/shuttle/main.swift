// shuttle: the Fabric node runner.
import Foundation
import Shuttle

let usage = """
    shuttle: the Fabric node runner

    For now the node runner runs embedded in weaver as its local node: `weaver` registers this machine's CPU,
    memory and GPUs and runs workloads on it (see `weaver --help`, settings node.*). A standalone shuttle that
    registers with weaver over NATS is not built yet.

    Usage: shuttle --help | --version

    """
let args = Array(CommandLine.arguments.dropFirst())
if args.contains("--help") || args.contains("-h") {
    print(usage, terminator: "")
    exit(0)
}
if args.contains("--version") {
    print("shuttle 0.1.0-dev")
    exit(0)
}
FileHandle.standardError.write(
    Data("shuttle: standalone mode is not available yet; run `weaver` (embedded local node)\n".utf8))
exit(2)
