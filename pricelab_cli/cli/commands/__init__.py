"""One file a command: read, call one core function, write, present."""
