import FabricCore

/// The simulator's future: events ordered by virtual time, then by the order they were scheduled.
///
/// Two events due at the same millisecond run in the order they were pushed (a sequence number breaks the tie),
/// so a run depends only on the seed, never on heap layout or hashing.
public struct EventQueue<Event>: Sendable where Event: Sendable {
    /// One scheduled event.
    public struct Entry: Sendable {
        public var at: Timestamp
        public var seq: UInt64
        public var event: Event

        func precedes(_ o: Entry) -> Bool { at != o.at ? at < o.at : seq < o.seq }
    }

    private var heap: [Entry] = []
    private var nextSeq: UInt64 = 0

    public init() {}

    public var count: Int { heap.count }
    public var isEmpty: Bool { heap.isEmpty }
    /// When the next event is due, nil when none is.
    public var nextTime: Timestamp? { heap.first?.at }

    /// Schedules `event` at `at`.
    public mutating func push(_ event: Event, at: Timestamp) {
        heap.append(Entry(at: at, seq: nextSeq, event: event))
        nextSeq += 1
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard heap[i].precedes(heap[parent]) else { break }
            heap.swapAt(i, parent)
            i = parent
        }
    }

    /// Removes and returns the earliest event (ties: the first pushed).
    public mutating func pop() -> Entry? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1
            let r = l + 1
            var m = i
            if l < heap.count && heap[l].precedes(heap[m]) { m = l }
            if r < heap.count && heap[r].precedes(heap[m]) { m = r }
            if m == i { break }
            heap.swapAt(i, m)
            i = m
        }
        return top
    }
}
