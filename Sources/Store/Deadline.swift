import Synchronization

/// A call with a deadline that returns at the deadline even when the call does not:
/// a connection or a broker that hangs must not hang its caller.
public enum Deadline {
    /// The result of `body`, or a ``StoreError/Code/unavailable`` marked
    /// ``StoreError/timedOut`` once `timeout` passed (`body` is then cancelled, and not
    /// waited for). Cancelling the caller ends the wait with `CancellationError`.
    /// - Parameter what: the call, named in the error (which call hung is the first
    ///   question a timeout raises).
    public static func run<T: Sendable>(_ timeout: Duration, what: String = "", _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let race = DeadlineRace<T>()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                race.start(continuation, timeout: timeout, what: what, body)
            }
        } onCancel: {
            race.settle(.failure(CancellationError()))
        }
    }
}


/// One call racing its deadline: whichever ends first resumes the caller, once. The
/// continuation is kept before the call and the timer start, so neither can end unseen.
final class DeadlineRace<T: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<T, any Error>?
        var outcome: Result<T, any Error>?
        var work: Task<Void, Never>?
        var timer: Task<Void, Never>?
    }

    private let state = Mutex(State())

    func start(_ continuation: CheckedContinuation<T, any Error>, timeout: Duration, what: String, _ body: @escaping @Sendable () async throws -> T) {
        let early = state.withLock { state -> Result<T, any Error>? in
            if let outcome = state.outcome { return outcome }  // cancelled before it began
            state.continuation = continuation
            return nil
        }
        if let early {
            continuation.resume(with: early)
            return
        }
        let work = Task {
            do { self.settle(.success(try await body())) } catch { self.settle(.failure(error)) }
        }
        let timer = Task {
            guard (try? await Task.sleep(for: timeout)) != nil else { return }
            let call = what.isEmpty ? "" : " (\(what))"
            var late = StoreError(code: .unavailable, message: "the database did not answer within \(timeout)\(call)")
            late.timedOut = true
            self.settle(.failure(late))
        }
        // Whichever settled meanwhile left its tasks to be cancelled here.
        let done = state.withLock { state -> Bool in
            state.work = work
            state.timer = timer
            return state.outcome != nil
        }
        if done { cleanUp() }
    }

    /// Resumes the caller with `result`, unless it was resumed already; stops the rest.
    func settle(_ result: Result<T, any Error>) {
        let continuation = state.withLock { state -> CheckedContinuation<T, any Error>? in
            guard state.outcome == nil else { return nil }
            state.outcome = result
            defer { state.continuation = nil }
            return state.continuation
        }
        continuation?.resume(with: result)
        cleanUp()
    }

    private func cleanUp() {
        let (work, timer) = state.withLock { state in (state.work, state.timer) }
        timer?.cancel()
        if case .failure = state.withLock({ $0.outcome }) { work?.cancel() }
    }
}
