"""What the command-line tests share: a tiny training run and the one-line error every failure must be."""

SMOKE = ["train", "--preset", "smoke", "--max-steps", "4", "--quiet"]  # a run of seconds


def one_error_line(capsys) -> str:
    """The one line `tinygpt` printed to stderr (asserted: exactly one, starting "tinygpt: error: ")."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tinygpt: error: "), err
    return err[0]
