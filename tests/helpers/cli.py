"""Run `sae-lab` in process and get (exit code, stdout, stderr)."""

from sae_lab.cli import main


def run_cli(args, capsys):
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err
