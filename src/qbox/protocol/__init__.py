"""The internal API between the control plane and a host agent, typed once (docs/agent-protocol.md).

Request and response bodies as pydantic models, one module per noun. The
agent validates what comes in and answers with these; the control plane's
client sends and reads the same classes. camelCase on the wire; ``Wire.wire()``
is the JSON a body travels as. This package imports only ``qbox.core``,
pydantic and the standard library, so both sides can import it.
"""
