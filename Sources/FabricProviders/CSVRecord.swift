/// Splits one CSV record into fields: commas separate, a field in double quotes may hold commas, and `""` inside
/// quotes is one quote. Records span one line only; this is all the offer catalog needs.
enum CSVRecord {
    /// Why a record could not be split; `column` is 1-based.
    enum Failure: Error, Equatable {
        case unterminatedQuote(column: Int)
        case textAfterQuote(column: Int)
    }

    /// The fields of `line`, unquoted. An empty line is one empty field.
    static func fields(_ line: Substring) throws(Failure) -> [String] {
        let comma = UInt8(ascii: ",")
        let quote = UInt8(ascii: "\"")
        let bytes = Array(line.utf8)
        var fields: [String] = []
        var i = 0
        while true {
            let column = fields.count + 1
            if i < bytes.count, bytes[i] == quote {
                // Quoted field: runs to the next lone quote; a doubled quote stands for one.
                var value: [UInt8] = []
                i += 1
                var closed = false
                while i < bytes.count {
                    if bytes[i] == quote {
                        if i + 1 < bytes.count, bytes[i + 1] == quote {
                            value.append(quote)
                            i += 2
                            continue
                        }
                        closed = true
                        i += 1
                        break
                    }
                    value.append(bytes[i])
                    i += 1
                }
                guard closed else { throw .unterminatedQuote(column: column) }
                guard i == bytes.count || bytes[i] == comma else { throw .textAfterQuote(column: column) }
                fields.append(String(decoding: value, as: UTF8.self))
            } else {
                let start = i
                while i < bytes.count, bytes[i] != comma { i += 1 }
                fields.append(String(decoding: bytes[start..<i], as: UTF8.self))
            }
            if i == bytes.count { return fields }
            i += 1  // the comma; a trailing comma yields a final empty field
            if i == bytes.count {
                fields.append("")
                return fields
            }
        }
    }
}
