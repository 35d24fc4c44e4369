"""One module or package per command; each takes an options object and makes the outputs the command promises."""
