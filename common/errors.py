"""The one exception type for bad input, and how entry scripts turn it into a clear message.

Any command, given bad input (a file, a list, an option), raises ``UserInputError``; ``run_main``
prints ``error: <message>`` on one line to stderr and exits with code 2, without a traceback.
"""
import sys


class UserInputError(Exception):
    """Bad input (file, list, option): entry scripts print ``error: <message>`` and exit non-zero."""


def run_main(main) -> None:
    """Run an entry point; bad input (UserInputError) becomes one ``error: ...`` line and exit code 2."""
    try:
        main()
    except UserInputError as error:
        print(f"error: {user_message(error)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"   # what str.splitlines() breaks at


def user_message(error) -> str:
    """The message of a UserInputError on one line (a line break that came with user input, e.g. a
    file name, is shown escaped); one raised in a DataLoader worker arrives wrapped in the worker's
    traceback, whose last line is ``...UserInputError: <message>``."""
    text = str(error)
    if text.startswith("Caught UserInputError in DataLoader worker"):
        text = text.strip().splitlines()[-1].split("UserInputError: ", 1)[-1]
    for character in LINE_BREAKS:
        text = text.replace(character, repr(character)[1:-1])
    return text
