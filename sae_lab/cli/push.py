"""Upload an SAE, or a sweep's best/ SAEs, to a Hugging Face Hub model repo, in SAELens's layout
with a model card; the token comes from HF_TOKEN or the Hugging Face login."""

from __future__ import annotations

import argparse

from sae_lab.cli.args import command


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = command(sub, "push", __doc__)
    p.add_argument("source", metavar="DIR",
                   help="SAE directory, or a sweep's output directory (its best/ is pushed)")
    p.add_argument("repo_id", metavar="REPO_ID", help="Hub model repo, OWNER/NAME")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", help="branch to push to (created when missing; default main)")
    p.add_argument("--commit-message", help="the commit's message")
    return p


def run(args: argparse.Namespace) -> None:
    from sae_lab.share.push import push

    url, paths = push(args.source, args.repo_id, private=args.private, revision=args.revision,
                      commit_message=args.commit_message)
    print(f"pushed {len(paths)} SAE(s) ({', '.join(paths)}) to {args.repo_id}: {url}")
