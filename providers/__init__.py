"""Model providers: one streaming Protocol, pure wire mapping, thin I/O."""
