"""The ``faceverify`` command line: thin subcommands over the library packages."""
