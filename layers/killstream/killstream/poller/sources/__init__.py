"""The live feeds behind one interface: `Source.poll() -> PollResult`, cursor in via `start()`."""
