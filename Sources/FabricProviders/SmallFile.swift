import FabricCore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Reads the small files settings point at (credentials, kubeconfigs, tokens), with errors that say what is wrong
/// with the path: missing, a folder, not readable, or too large.
public enum SmallFile {
    /// The whole file, at most `bytesMax` bytes.
    /// - Parameters:
    ///   - what: what the file is, for messages ("kubeconfig", "service account key").
    ///   - field: the setting that named the file, carried by the error.
    public static func read(_ path: String, what: String, bytesMax: Int, field: String) throws(FabricError) -> Data {
        func fail(_ problem: String) -> FabricError {
            FabricError(.invalidArgument, "\(what) file \(path) \(problem)", field: field)
        }
        guard !path.isEmpty else { throw FabricError(.invalidArgument, "no \(what) file was named", field: field) }
        var info = stat()
        guard stat(path, &info) == 0 else { throw fail(describe(errno)) }
        guard (info.st_mode & S_IFMT) != S_IFDIR else { throw fail("is a folder, not a file") }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw fail("is not a regular file") }
        guard info.st_size <= off_t(bytesMax) else { throw fail("is larger than \(bytesMax) bytes") }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw fail(describe(errno)) }
        defer { close(fd) }
        var data = Data(count: bytesMax + 1)
        var total = 0
        while total <= bytesMax {
            let n = data.withUnsafeMutableBytes { buffer in
                Glibc.read(fd, buffer.baseAddress! + total, bytesMax + 1 - total)
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw fail(describe(errno))
            }
            if n == 0 { break }
            total += n
        }
        guard total <= bytesMax else { throw fail("is larger than \(bytesMax) bytes") }
        return data.prefix(total)
    }

    static func describe(_ code: Int32) -> String {
        switch code {
        case ENOENT: return "does not exist"
        case EACCES, EPERM: return "is not readable by this user (permission denied)"
        case ENOTDIR: return "has a path part that is not a folder"
        case ELOOP: return "is a symbolic link loop"
        default: return "cannot be read: \(String(cString: strerror(code)))"
        }
    }
}
