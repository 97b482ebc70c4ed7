@testable import Kafka
import Testing

@Suite("Consumer lifecycle state machine")
struct KafkaConsumerStateMachineTests {
    @Test("run, shut down, thread exits")
    func normalLifecycle() {
        var machine = KafkaConsumerStateMachine()
        #expect(machine.run() == .startPolling)
        #expect(machine.state == .running)
        #expect(machine.triggerShutdown() == .stopPolling)
        #expect(machine.state == .closing)
        #expect(machine.triggerShutdown() == .none, "a second shutdown does nothing")
        machine.pollThreadExited()
        #expect(machine.state == .finished)
        #expect(machine.run() == .failAlreadyRunning)
    }

    @Test("shutdown before run makes run return at once")
    func shutdownBeforeRun() {
        var machine = KafkaConsumerStateMachine()
        #expect(machine.triggerShutdown() == .none)
        #expect(machine.run() == .finishWithoutPolling)
        #expect(machine.state == .finished)
    }

    @Test("run twice fails")
    func runTwice() {
        var machine = KafkaConsumerStateMachine()
        #expect(machine.run() == .startPolling)
        #expect(machine.run() == .failAlreadyRunning)
    }
}
