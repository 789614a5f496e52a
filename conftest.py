"""pytest settings for the whole repository (the notebooks run under nbval)."""


def pytest_collection_modifyitems(session, config, items):
    # nbval gives up on a cell if its kernel sends no message for 5 s after the cell has run. With two
    # notebooks training on two cores at once, a kernel's output thread can wait longer than that for
    # a core (seen once in 04-neural-language-model). Allow 60 s; a cell's own run time is still
    # bounded by --nbval-cell-timeout.
    for item in items:
        if type(item).__name__ == "IPyNbCell":
            item.output_timeout = 60
