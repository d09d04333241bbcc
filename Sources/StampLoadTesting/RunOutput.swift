/// Where a run's messages go as it runs: the executable prints them, a test may collect them.
public struct RunOutput: Sendable {
    /// A message to show at once, such as the first failure of its kind.
    public var note: @Sendable (String) -> Void
    /// The progress line, once a second.
    public var progress: @Sendable (String) -> Void

    public init(note: @escaping @Sendable (String) -> Void, progress: @escaping @Sendable (String) -> Void) {
        self.note = note
        self.progress = progress
    }
}
