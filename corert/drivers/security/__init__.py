"""Security drivers: capabilities, seccomp (compiled BPF, cached by profile hash), masked/read-only paths."""
