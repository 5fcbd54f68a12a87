"""The code interpreter: Jupyter kernels inside a sandbox, driven through the kernel host.

``guest/`` is what runs *inside* the sandbox (bind-mounted read-only at
``/.qbox/guest``); the rest is the agent's side (docs/kernel-host-protocol.md).
"""
