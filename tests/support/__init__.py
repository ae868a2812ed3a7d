"""What the tests share: real servers and peers on loopback, speech fixtures, strict conformance
checks against the openai SDK's models, event strategies for fuzzing. No mocks of our own parts."""
