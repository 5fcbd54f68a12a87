"""qbox: self-hosted sandboxes. The public SDK surface is re-exported from ``qbox.sdk``."""
