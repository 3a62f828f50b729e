"""python -m training <command>: the data scientists' side of edge-training.

  run --local   the whole training flow here, against the storage emulator (no Azure needed)
  submit        a training job on the attached edge compute; the data stays on the Hub
  register      the job's model as a new, tagged model version
  package       a container image of a model version, in the workspace's registry
  deploy        the image on the Hub VM (--target edge) or a managed online endpoint (--target cloud)
  serve --local the image's server process here, on a model folder (no Docker needed)

Every command but run reads the stack's outputs: `pulumi stack output --json` (--stack), or a
file of them (--outputs).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from training import stack_outputs

log = logging.getLogger("training")

OK, JOB_FAILED, USAGE = 0, 1, 2


def _outputs(args: argparse.Namespace) -> stack_outputs.StackOutputs:
    return stack_outputs.load(stack=args.stack, outputs_file=args.outputs)


def _client(args: argparse.Namespace):  # noqa: ANN202 (MLClient; imported lazily, it is slow)
    from training.workspace import ml_client

    return ml_client(_outputs(args))


def cmd_run(args: argparse.Namespace) -> int:
    from training import local

    return local.run(args)


def cmd_submit(args: argparse.Namespace) -> int:
    from training import jobs

    outputs = _outputs(args)
    request = jobs.JobRequest(
        prefix=args.prefix,
        hyperparameters={"c": args.c, "max_iter": args.max_iter, "seed": args.seed},
        image=args.image,
    )
    job = jobs.build_job(outputs, request)
    from training.workspace import ml_client

    outcome = jobs.submit(ml_client(outputs), job, stream=not args.no_stream)
    print(json.dumps({"job": outcome.name, "status": outcome.status}))
    if outcome.status != "Completed":
        print(f"error: job {outcome.name} ended {outcome.status}: {outcome.error}", file=sys.stderr)
        return JOB_FAILED
    return OK


def cmd_register(args: argparse.Namespace) -> int:
    from training import models

    outputs = _outputs(args)
    if args.lineage:
        lineage = json.loads(args.lineage.read_text())
        fingerprint, params = lineage["data_fingerprint"], lineage.get("hyperparameters", {})
    else:
        fingerprint, params = args.data_fingerprint, {}
    from training.workspace import ml_client

    model = models.register(
        ml_client(outputs),
        outputs,
        args.name,
        models.Lineage(
            job_name=args.job, data_fingerprint=fingerprint, hyperparameters=params, git_commit=models.git_commit()
        ),
    )
    print(json.dumps({"model": model.name, "version": model.version}))
    return OK


def cmd_package(args: argparse.Namespace) -> int:
    from training import packaging

    if args.azureml_packaging:
        print(packaging.package(_client(args), args.model, args.version))
        return OK
    import tempfile

    from training import image_build, models

    outputs = _outputs(args)
    with tempfile.TemporaryDirectory(prefix="edge-training-model-") as downloaded:
        if args.model_dir:
            model_dir = args.model_dir
            spec = packaging.local_model(
                args.model, args.version, model_dir, args.data_fingerprint, models.git_commit()
            )
        else:
            model_dir, spec = packaging.registered_model(_client(args), args.model, args.version, Path(downloaded))
        context = image_build.build_context(model_dir)
        built = image_build.build_image(
            image_build.registry_client(outputs.azureSubscriptionId),
            outputs.resourceGroupName,
            outputs.registryName,
            outputs.registryLoginServer,
            spec,
            context,
        )
    print(json.dumps({"image": built.image, "tag": built.tag, "digest": built.digest, "run": built.run_id}))
    return OK


def cmd_deploy(args: argparse.Namespace) -> int:
    if args.target == "cloud":
        from dataclasses import asdict

        from training.cloud_endpoint import deploy_online

        if not (args.model and args.version):
            raise stack_outputs.OutputsError("--target cloud needs --model and --version (and --image from `package`)")
        print(json.dumps(asdict(deploy_online(_client(args), args.model, args.version, image=args.image))))
        return OK
    from training import deploy

    values, source = stack_outputs.load_values(args.stack, args.outputs)
    outputs = stack_outputs.StackOutputs.from_mapping(values, source)
    if not (args.image and args.ssh_key):
        raise stack_outputs.OutputsError("--target edge needs --image (from `package`) and --ssh-key")
    token_name = args.token_name or values.get("registryPullTokenName")
    if not token_name:
        raise stack_outputs.OutputsError(
            "no pull token: pass --token-name, or update the stack (registryPullTokenName)"
        )
    if args.token_password_file:
        password = args.token_password_file.read_text().strip()
    elif values.get("registryPullTokenId"):
        from training import image_build

        password = deploy.generate_pull_password(
            image_build.registry_client(outputs.azureSubscriptionId),
            outputs.resourceGroupName,
            outputs.registryName,
            str(values["registryPullTokenId"]),
        )
    else:
        raise stack_outputs.OutputsError("no pull password: pass --token-password-file (the stack has no token id)")
    where = deploy.DeployTarget(
        address=outputs.hubVmPublicIp,
        username=outputs.hubVmAdminUsername,
        private_key=args.ssh_key.read_text(),
        host_key_fingerprint=outputs.sshHostKeyFingerprint,
    )
    if deploy.edge_mode(values) == "kubernetes":
        from edge.serving_manifests import ServingRelease

        release = ServingRelease(
            app=args.app,
            image=args.image,
            registry=outputs.registryLoginServer,
            token_name=str(token_name),
            token_password=password,
            model=f"{args.model}:{args.version}" if args.model and args.version else "",
        )
        print(json.dumps({"deployment": deploy.deploy_kubernetes(where, release), "image": args.image}))
        return OK
    name = deploy.deploy(
        where,
        deploy.Release(
            image=args.image,
            registry=outputs.registryLoginServer,
            token_name=str(token_name),
            token_password=password,
            app=args.app,
        ),
    )
    print(json.dumps({"container": name, "image": args.image}))
    return OK


def cmd_serve(args: argparse.Namespace) -> int:
    from training import local_server

    return local_server.serve(args.model, root=args.workdir, port=args.port)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m training", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = root.add_subparsers(dest="command", required=True)

    def with_stack(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--stack", help="Pulumi stack to read outputs from (default: the selected one)")
        p.add_argument("--outputs", type=Path, help="a file of `pulumi stack output --json` instead")
        return p

    from training import local

    run = commands.add_parser("run", help="train here against the storage emulator")
    local.configure_parser(run)
    run.set_defaults(handler=cmd_run)

    submit = with_stack(commands.add_parser("submit", help="train on the edge compute"))
    submit.add_argument("--prefix", required=True, help="blob prefix of the training data in the Hub container")
    submit.add_argument("--c", type=float, default=1.0)
    submit.add_argument("--max-iter", type=int, default=500)
    submit.add_argument("--seed", type=int, default=0)
    submit.add_argument("--image", default=None, help="base image (default: the pinned one)")
    submit.add_argument("--no-stream", action="store_true", help="do not follow the job's logs")
    submit.set_defaults(handler=cmd_submit)

    register = with_stack(commands.add_parser("register", help="register a job's model"))
    register.add_argument("--job", required=True)
    register.add_argument("--name", default="edge-model")
    lineage = register.add_mutually_exclusive_group(required=True)
    lineage.add_argument("--lineage", type=Path, help="the job's outputs/lineage.json")
    lineage.add_argument("--data-fingerprint")
    register.set_defaults(handler=cmd_register)

    package = with_stack(commands.add_parser("package", help="build a model image into the registry"))
    package.add_argument("--model", required=True)
    package.add_argument("--version", required=True)
    package.add_argument("--model-dir", type=Path, help="a local model folder (run --local's outputs/model) instead")
    package.add_argument("--data-fingerprint", help="with --model-dir: default from the folder's ../lineage.json")
    package.add_argument(
        "--azureml-packaging", action="store_true", help="use Azure ML model packaging (preview) instead of ACR Tasks"
    )
    package.set_defaults(handler=cmd_package)

    deploy = with_stack(commands.add_parser("deploy", help="run a model image"))
    deploy.add_argument("--target", choices=["edge", "cloud"], default="edge")
    deploy.add_argument("--image", help="image reference (from `package`)")
    deploy.add_argument("--token-name", help="pull token (default: the stack's registryPullTokenName)")
    deploy.add_argument(
        "--token-password-file", type=Path, help="file holding its password (default: a new one, valid 2 hours)"
    )
    deploy.add_argument("--app", default="edge-model", help="--target edge: container / Kubernetes app name")
    deploy.add_argument("--ssh-key", type=Path, help="the VM admin's private key file")
    deploy.add_argument("--model", help="--target cloud: model name")
    deploy.add_argument("--version", help="--target cloud: model version")
    deploy.set_defaults(handler=cmd_deploy)

    serve = commands.add_parser("serve", help="run the model image's server here, on a model folder")
    serve.add_argument("--local", action="store_true", required=True, help="here, on 127.0.0.1 (no Docker)")
    serve.add_argument("--model", type=Path, required=True, help="model folder (from run --local: outputs/model)")
    serve.add_argument("--port", type=int, default=5001, help="port on 127.0.0.1 (default 5001, as in the image)")
    serve.add_argument("--workdir", type=Path, default=Path(".edge-training"), help="where the serving virtualenv goes")
    serve.set_defaults(handler=cmd_serve)
    return root


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    args = parser().parse_args(argv)
    if args.command == "submit" and args.image is None:
        from training.jobs import BASE_IMAGE

        args.image = BASE_IMAGE
    try:
        return int(args.handler(args))
    except stack_outputs.OutputsError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE
    except Exception as error:
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

        known = (ClientAuthenticationError, HttpResponseError, ServiceRequestError, RuntimeError, OSError)
        if not isinstance(error, known):
            raise
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return JOB_FAILED
