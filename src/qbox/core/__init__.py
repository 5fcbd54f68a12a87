"""Shared building blocks: errors, ids, time formats and states. Imports nothing else of qbox."""
