"""The sandbox: tools for a provider's customers to test their webhook receivers
before going live, all signing exactly like the engine does.

- `samples`: sample events from the catalogue, the envelope (`event_body`) and keys
- `forward`: one signed POST as the engine makes it, and its outcome
- `capture`: a capture receiver that records, verifies and serves what it got
- `conformance`: the probes of `dispatcher check-receiver`
"""
