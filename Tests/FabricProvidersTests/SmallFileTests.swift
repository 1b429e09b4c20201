import FabricCore
import Foundation
import Testing

@testable import FabricProviders

/// Files named by settings: each way a path can be wrong gets its own message, naming the file and the setting.
struct SmallFileTests {
    let folder: String

    init() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("small-file-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    func message(_ path: String, bytesMax: Int = 16) -> String? {
        do {
            _ = try SmallFile.read(path, what: "key", bytesMax: bytesMax, field: "x.file")
            return nil
        } catch {
            #expect(error.field == "x.file")
            #expect(error.code == .invalidArgument)
            return error.message
        }
    }

    @Test func eachProblemHasItsMessage() throws {
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let ok = folder + "/ok"
        try Data("0123456789abcdef".utf8).write(to: URL(fileURLWithPath: ok))
        #expect(try SmallFile.read(ok, what: "key", bytesMax: 16, field: "x.file") == Data("0123456789abcdef".utf8))
        #expect(message(ok, bytesMax: 15) == "key file \(ok) is larger than 15 bytes")
        #expect(message(folder + "/missing") == "key file \(folder)/missing does not exist")
        #expect(message(folder) == "key file \(folder) is a folder, not a file")
        #expect(message(ok + "/below") == "key file \(ok)/below has a path part that is not a folder")
        #expect(message("") == "no key file was named")
        #expect(message("/dev/null") == "key file /dev/null is not a regular file")
    }

    @Test func aKeyWithoutItsPrivateKeySaysSo() throws {
        let json = Data(#"{"type":"service_account","client_email":"a@b.c"}"#.utf8)
        #expect(throws: ProviderError.self) { try ServiceAccountKey.parse(json) }
        do {
            _ = try ServiceAccountKey.parse(json)
        } catch let e as ProviderError {
            #expect(e.message == "service-account key lacks private_key")
        }
        do {
            _ = try ServiceAccountKey.parse(Data("not json".utf8))
        } catch let e as ProviderError {
            #expect(e.message == "service-account key is not valid JSON")
        }
    }
}
