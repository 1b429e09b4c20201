// weaver: the Fabric control plane.
import FabricCore
import FabricLog
import Foundation
import Weaver

let settings: Settings
do {
    switch try SettingsLoader.load(
        arguments: Array(CommandLine.arguments.dropFirst()), environment: ProcessInfo.processInfo.environment)
    {
    case .help(let text):
        print(text, terminator: "")
        exit(0)
    case .version(let v):
        print(v)
        exit(0)
    case .run(let s):
        settings = s
    }
} catch {
    FileHandle.standardError.write(Data("weaver: \(error.message)\nRun `weaver --help` for every setting.\n".utf8))
    exit(SettingsLoader.usageExitCode)
}

// A vanished reader of stdout/stderr (a log shipper restarting, `| head`) must not kill the control plane.
signal(SIGPIPE, SIG_IGN)

let logger = Logger(
    component: "weaver", level: LogLevel(name: settings.log.level.rawValue) ?? .info,
    format: settings.log.format == .json ? .json : .text)
logger.info("starting weaver \(WeaverApp.version)")
logger.debug("settings\n\(settings.redactedDescription())")

do {
    let app = try await WeaverApp.build(settings: settings, logger: logger)
    try await app.run()
} catch let e as FabricError {
    logger.error("weaver stopped: \(e.message)", e.field.map { ["setting": $0] } ?? [:])
    exit(1)
} catch {
    logger.error("weaver stopped: \(error)")
    exit(1)
}
