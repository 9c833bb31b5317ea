"""The command lines (also console scripts); each parses flags and calls the library below it."""
