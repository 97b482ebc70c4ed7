import Foundation
import Synchronization

/// A dedicated thread that calls a blocking poll function until it is stopped.
///
/// librdkafka's poll calls block; they run here so that they never occupy a
/// thread of Swift's cooperative pool. The closure should return every few
/// hundred milliseconds at most, so that ``stop()`` takes effect promptly.
final class PollThread: Sendable {
    /// Shared by the thread's loop and its owner, so neither keeps the other alive.
    private final class Flags: Sendable {
        let stopRequested = Atomic<Bool>(false)
        let exited = DispatchSemaphore(value: 0)
    }

    private let flags = Flags()

    /// Starts the thread: `body` runs until ``stop()`` or until it returns false,
    /// then `onExit` runs once on the same thread.
    init(name: String, body: @escaping @Sendable () -> Bool, onExit: @escaping @Sendable () -> Void = {}) {
        let flags = self.flags
        let thread = Thread {
            while !flags.stopRequested.load(ordering: .acquiring), body() {}
            onExit()
            flags.exited.signal()
        }
        thread.name = name
        thread.start()
    }

    /// Whether ``stop()`` was called.
    var isStopped: Bool { flags.stopRequested.load(ordering: .acquiring) }

    /// Asks the thread to stop and waits until it has left its loop and run `onExit`. Idempotent.
    func stop() {
        requestStop()
        flags.exited.wait()
        flags.exited.signal()  // let a second caller through too
    }

    /// Asks the thread to stop without waiting for it.
    func requestStop() {
        flags.stopRequested.store(true, ordering: .releasing)
    }
}

/// Runs a blocking librdkafka call (commit, flush, admin request) on a thread of
/// its own, so that it never occupies a thread of Swift's cooperative pool.
/// These calls are rare (one per batch at most); a short-lived thread is cheap next to them.
func runBlocking<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        Thread.detachNewThread { continuation.resume(returning: body()) }
    }
}
