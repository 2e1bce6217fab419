"""`supervise`: parse, call the library, map errors to exit codes. One module per family of commands."""
