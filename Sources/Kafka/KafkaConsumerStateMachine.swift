/// The lifecycle of a ``KafkaConsumer``: what may happen in which state.
///
/// Held in a lock by the consumer. Its methods only decide; they return an
/// action that the consumer carries out after releasing the lock.
struct KafkaConsumerStateMachine: Sendable {
    enum State: Sendable, Equatable {
        /// Created; `run()` not called yet.
        case initial
        /// The poll thread is fetching.
        case running
        /// Shutdown was requested; the poll thread is closing the consumer.
        case closing
        /// The consumer has left the group; nothing more happens.
        case finished
    }

    private(set) var state: State = .initial

    enum RunAction: Equatable {
        /// Subscribe and start the poll thread.
        case startPolling
        /// `run()` was called twice, or after shutdown.
        case failAlreadyRunning
        /// Shutdown came before `run()`: end the event stream and return at once.
        case finishWithoutPolling
    }

    mutating func run() -> RunAction {
        switch state {
        case .initial:
            state = .running
            return .startPolling
        case .closing:
            state = .finished
            return .finishWithoutPolling
        case .running, .finished:
            return .failAlreadyRunning
        }
    }

    enum ShutdownAction: Equatable {
        /// Tell the poll thread to stop fetching, close the consumer and end the events.
        case stopPolling
        /// Nothing is running: the next `run()` returns at once.
        case none
    }

    mutating func triggerShutdown() -> ShutdownAction {
        switch state {
        case .initial:
            state = .closing
            return .none
        case .running:
            state = .closing
            return .stopPolling
        case .closing, .finished:
            return .none
        }
    }

    mutating func pollThreadExited() {
        state = .finished
    }
}
