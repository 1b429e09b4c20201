import Foundation
import Testing

@testable import FabricCore

/// Duplicate keys in one object are refused, naming the path; the same key in different objects is fine.
@Suite struct DuplicateKeyTests {
    @Test(arguments: [
        (#"{"name":"a","name":"b"}"#, "name"),
        (#"{"name":"a","resources":{"cpu":"1","memory":"1Gi","cpu":"2"}}"#, "resources.cpu"),
        (#"{"a":[{"x":1},{"x":1,"x":2}]}"#, "a[1].x"),
        (#"{"na\u006de":"a","name":"b"}"#, "name"),
        (#"{"k\"q":1,"k\"q":2}"#, "k\"q"),
        (#"{"\ud83d\ude00":1,"😀":2}"#, "😀"),
        (#"{"env":{"A":"1","B":"2","A":"3"}}"#, "env.A"),
    ])
    func duplicatesAreFound(json: String, path: String) {
        #expect(JSONValue.firstDuplicateKey(in: Data(json.utf8)) == path)
    }

    @Test(arguments: [
        #"{"name":"a","resources":{"name":"b"}}"#,
        #"[{"x":1},{"x":2}]"#,
        #"{"a":"name","name":"a"}"#,
        #"{"a":{"b":1},"b":{"a":1}}"#,
        #"{"s":"{\"x\":1,\"x\":2}"}"#,
        #"{}"#,
    ])
    func distinctKeysPass(json: String) {
        #expect(JSONValue.firstDuplicateKey(in: Data(json.utf8)) == nil)
    }

    @Test func aWorkloadWithADuplicateFieldIsRefusedNamingIt() {
        let body = Data(#"{"name":"a","command":["true"],"name":"b"}"#.utf8)
        #expect(throws: FabricError.self) { try WorkloadSpecParser.parse(body) }
        do {
            _ = try WorkloadSpecParser.parse(body)
        } catch {
            #expect(error.field == "name")
            #expect(error.code == .invalidArgument)
        }
    }
}
