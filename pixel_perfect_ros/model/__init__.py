"""nn.Modules with the official state-dict names, and the flow-matching schedule."""
