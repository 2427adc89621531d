"""Pure domain core: standard library only, no clock, no environment, no I/O."""
