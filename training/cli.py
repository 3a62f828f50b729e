"""python -m training <command>: the data scientists' side of edge-training.

  run --local   an example trainer here, against the storage emulator, MLflow to .edge-training/
  submit        your training code as a job on the edge compute; the data stays on the Hub
  register      the job's model as a new, tagged MLflow model version, once the egress audit passes
  package       a container image of any MLflow model version, in the workspace's registry (audited too)
  deploy        the image on the Hub VM (--target edge) or a managed online endpoint (--target cloud)
  serve --local the image's server process here, on an MLflow model folder (no Docker needed)

Every command but run reads the stack's outputs: `pulumi stack output --json` (--stack), or a
file of them (--outputs). Building the parser imports no SDK: each command imports what it uses.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

from training import stack_outputs

log = logging.getLogger("training")

OK, JOB_FAILED, USAGE = 0, 1, 2
# Azure ML asset and job names: letters, digits, '-', '_' (and '.' for assets), starting with a
# letter or digit, at most 255 characters.
ASSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$")
DEBUG_VARIABLE = "EDGE_TRAINING_DEBUG"


class UsageError(ValueError):
    """Bad input found by a command itself (argparse finds the rest)."""


# Secret-shaped values a mistaken argument may carry; argparse echoes what it cannot parse.
SECRET_VALUE = re.compile(r"((?:AccountKey|SharedAccessSignature|sig|password)=)[^;&'\"\s]+", re.IGNORECASE)


def redact(text: str) -> str:
    return SECRET_VALUE.sub(r"\1***", text)


class OneLineParser(argparse.ArgumentParser):
    """argparse's errors as one line (it prints the whole usage first by default), secrets
    redacted; no abbreviations, so that --connection-string is not taken for a longer flag."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: error: {redact(message)} (see --help)\n")


def _outputs(args: argparse.Namespace) -> stack_outputs.StackOutputs:
    return _trusting(stack_outputs.load(stack=args.stack, outputs_file=args.outputs))


def _trusting(outputs: stack_outputs.StackOutputs) -> stack_outputs.StackOutputs:
    """This process trusts the stack's Hub CA next to certifi's roots (edge_train/trust.py), for
    everything it sends to the Hub (staging, the blob client, deploy); an operator's own
    REQUESTS_CA_BUNDLE / SSL_CERT_FILE wins."""
    if outputs.hubCaCertificates.strip():
        from training.src.edge_train.trust import BUNDLE_VARIABLES, combined_bundle

        bundle = str(combined_bundle(outputs.hubCaCertificates))
        for name in BUNDLE_VARIABLES:
            os.environ.setdefault(name, bundle)
    return outputs


def _client(args: argparse.Namespace) -> Any:
    from training.workspace import ml_client

    return ml_client(_outputs(args))


def _with_stack(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--stack", help="Pulumi stack to read outputs from (default: the selected one)")
    p.add_argument("--outputs", type=Path, help="a file of `pulumi stack output --json` instead")
    return p


# --- run --local ------------------------------------------------------------------------------------


def configure_run(commands: Any) -> None:
    from training import local  # stdlib and the location parser only, until it runs

    run = commands.add_parser("run", help="train here against the storage emulator")
    local.configure_parser(run)
    run.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from training import local

    return local.run(args)


# --- submit -----------------------------------------------------------------------------------------


def _hub_input(text: str) -> tuple[str, str]:
    name, separator, uri = text.partition("=")
    if not separator or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=hub://<container>/<prefix>")
    from training.src.edge_train.location import HubLocation, LocationError

    try:
        return name, HubLocation.parse(uri).uri
    except LocationError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def configure_submit(commands: Any) -> None:
    submit = _with_stack(commands.add_parser("submit", help="train on the edge compute"))
    what = submit.add_mutually_exclusive_group()
    what.add_argument("-f", "--file", type=Path, help="a command job in Azure ML's YAML schema (az ml job create -f)")
    what.add_argument("--code", type=Path, help="your training code's folder (the job's code snapshot)")
    what.add_argument("--example", help="one of examples/ (default: churn, when neither -f nor --code is given)")
    submit.add_argument("--command", help='with --code: the command, e.g. "python train.py --data ${{inputs.data}}"')
    submit.add_argument(
        "--input",
        type=_hub_input,
        action="append",
        default=[],
        metavar="NAME=hub://CONTAINER/PREFIX",
        help="Hub data the job reads in place, as ${{inputs.NAME}} and $EDGE_INPUT_NAME (repeatable)",
    )
    submit.add_argument("--prefix", help="shorthand for --input data=hub://<the stack's data container>/PREFIX")
    environment = submit.add_mutually_exclusive_group()
    environment.add_argument("--environment", type=Path, help="a conda.yaml, built on the pinned base image")
    environment.add_argument("--image", help="a complete image to run in, as it is")
    submit.add_argument(
        "--blob-api-version", help="x-ms-version for Hub storage (default: hubBlobApiVersion, 2019-07-07)"
    )
    submit.add_argument(
        "--instance-type",
        help="kubernetes mode: the instance type to run on, e.g. edge-training-gpu for the GPUs of an NCv3 stack "
        "(default: the job file's resources.instance_type, else the compute's default)",
    )
    submit.add_argument("--dry-run", action="store_true", help="print the job and the guard's findings; send nothing")
    submit.add_argument(
        "--allow-code-outside-project",
        action="store_true",
        help="let a job file's code: point outside its project (the git work tree holding it, else its folder)",
    )
    submit.add_argument("--no-stream", action="store_true", help="do not follow the job's logs")
    submit.set_defaults(handler=cmd_submit)


def _job_spec(args: argparse.Namespace, outputs: stack_outputs.StackOutputs) -> Any:
    from training import jobs

    inputs = dict(args.input)
    if args.prefix is not None:
        from training.src.edge_train.location import HubLocation, LocationError

        try:
            inputs.setdefault("data", HubLocation(outputs.hubDataContainer, args.prefix).uri)
        except LocationError as error:
            raise UsageError(f"--prefix: {error}") from None
    environment = jobs.environment_option(args.environment, args.image)
    if args.code is not None:
        if not args.command:
            raise UsageError("--code needs --command (what to run in that folder)")
        return _with_instance_type(
            jobs.spec_from_code(args.code, args.command, inputs, environment), args.instance_type
        )
    if args.command:
        raise UsageError("--command goes with --code")
    if args.file is not None:
        spec = jobs.spec_from_file(args.file)
    else:
        name = args.example or "churn"
        if not (jobs.EXAMPLES / name / "job.yml").is_file():
            raise UsageError(f"--example {name!r} is not a folder of {jobs.EXAMPLES} with a job.yml")
        spec = jobs.example_spec(name)
    if inputs or environment:
        body = dict(spec.body)
        body["inputs"] = {**(body.get("inputs") or {}), **inputs}
        if environment:
            body["environment"] = environment
        spec = jobs.JobSpec(body, spec.base_dir, spec.source)
    return _with_instance_type(spec, args.instance_type)


def _with_instance_type(spec: Any, instance_type: str | None) -> Any:
    """--instance-type over the job's own resources.instance_type (checked against the stack later)."""
    from training import jobs

    if instance_type is None:
        return spec
    body = dict(spec.body)
    resources = body.get("resources") or {}
    if not isinstance(resources, dict):
        raise UsageError(f"{spec.source}: resources must be a mapping")
    body["resources"] = {**resources, "instance_type": instance_type}
    return jobs.JobSpec(body, spec.base_dir, spec.source)


def cmd_submit(args: argparse.Namespace) -> int:
    from training import jobs

    outputs = _outputs(args)
    settings = jobs.SubmitSettings.from_outputs(outputs, args.blob_api_version)
    with jobs.prepare(_job_spec(args, outputs), settings, args.allow_code_outside_project) as prepared:
        if args.dry_run:
            print(jobs.render(prepared))
            return USAGE if prepared.findings else OK
        if prepared.findings:
            raise jobs.EgressRefused("refusing to submit: " + "; ".join(prepared.findings))
        from training.workspace import ml_client

        outcome = jobs.submit(ml_client(outputs), prepared.job, stream=not args.no_stream)
    print(json.dumps({"job": outcome.name, "status": outcome.status}))
    if outcome.status != "Completed":
        print(f"error: job {outcome.name} ended {outcome.status}: {outcome.error}", file=sys.stderr)
        return JOB_FAILED
    return OK


# --- register ---------------------------------------------------------------------------------------


def _asset_name(text: str) -> str:
    if not ASSET_NAME.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an Azure ML asset name (letters, digits, . _ -)")
    return text


def _job_name(text: str) -> str:
    if not JOB_NAME.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an Azure ML job name (letters, digits, _ -)")
    return text


def _egress_reason(text: str) -> str:
    if not text.strip() or len(text) > 256 or any(ord(c) < 32 for c in text):
        raise argparse.ArgumentTypeError("the reason must be one line of 1 to 256 characters")
    return text.strip()


def _with_audit(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--allow-model-egress",
        metavar="REASON",
        type=_egress_reason,
        help="proceed although the model egress audit found training rows; the reason is kept as a model tag",
    )
    p.add_argument("--dry-run", action="store_true", help="audit the model and print the findings; send nothing")
    return p


def _audit(model_dir: Path, args: argparse.Namespace) -> Any:
    """Audit the model folder; print the report on --dry-run; refuse findings without a reason."""
    from training import model_audit

    report = model_audit.audit(model_dir, row_check=model_audit.row_check_beside(model_dir))
    if args.dry_run:
        print(json.dumps({"model_dir": str(model_dir), **report.tags(args.allow_model_egress)}, indent=2))
    model_audit.check(report, args.allow_model_egress)
    return report


def configure_register(commands: Any) -> None:
    register = _with_audit(_with_stack(commands.add_parser("register", help="register a job's model")))
    register.add_argument("--job", required=True, type=_job_name)
    register.add_argument("--name", default="edge-model", type=_asset_name)
    register.add_argument(
        "--model-dir", type=Path, help="the job's outputs/model, downloaded already (default: download it to audit)"
    )
    lineage = register.add_mutually_exclusive_group(required=True)
    lineage.add_argument("--lineage", type=Path, help="the job's outputs/lineage.json")
    lineage.add_argument("--data-fingerprint")
    register.set_defaults(handler=cmd_register)


def cmd_register(args: argparse.Namespace) -> int:
    import tempfile

    from training import registry

    if args.lineage:
        fingerprint, params = registry.read_lineage(args.lineage)
    else:
        fingerprint, params = args.data_fingerprint, {}
    lineage = registry.Lineage(
        job_name=args.job, data_fingerprint=fingerprint, hyperparameters=params, git_commit=registry.git_commit()
    )
    outputs = _outputs(args)
    from training.workspace import ml_client

    client = ml_client(outputs)
    with tempfile.TemporaryDirectory(prefix="edge-training-audit-") as downloaded:
        model_dir = args.model_dir or registry.job_model(client, args.job, Path(downloaded))
        report = _audit(model_dir, args)
    if args.dry_run:
        return OK
    model = registry.register(client, outputs, args.name, lineage, tags=report.tags(args.allow_model_egress))
    print(json.dumps({"model": model.name, "version": model.version}))
    return OK


# --- package and deploy -----------------------------------------------------------------------------


def configure_package(commands: Any) -> None:
    package = _with_audit(_with_stack(commands.add_parser("package", help="build a model image into the registry")))
    package.add_argument("--model", required=True)
    package.add_argument("--version", required=True)
    package.add_argument("--model-dir", type=Path, help="a local model folder (run --local: outputs/<example>/model)")
    package.add_argument("--data-fingerprint", help="with --model-dir: default from the folder's ../lineage.json")
    package.add_argument(
        "--azureml-packaging", action="store_true", help="use Azure ML model packaging (preview) instead of ACR Tasks"
    )
    package.set_defaults(handler=cmd_package)


def cmd_package(args: argparse.Namespace) -> int:
    import tempfile

    from training import image_build, packaging, registry

    if args.azureml_packaging:
        client = _client(args)
        with tempfile.TemporaryDirectory(prefix="edge-training-model-") as downloaded:
            model_dir, _ = packaging.registered_model(client, args.model, args.version, Path(downloaded))
            _audit(model_dir, args)
        if not args.dry_run:
            print(packaging.package(client, args.model, args.version))
        return OK
    outputs = _outputs(args)
    with tempfile.TemporaryDirectory(prefix="edge-training-model-") as downloaded:
        if args.model_dir:
            model_dir = args.model_dir
            spec = packaging.local_model(
                args.model, args.version, model_dir, args.data_fingerprint, registry.git_commit()
            )
        else:
            model_dir, spec = packaging.registered_model(_client(args), args.model, args.version, Path(downloaded))
        _audit(model_dir, args)
        context = image_build.build_context(model_dir)
        if args.dry_run:
            print(json.dumps({"context": image_build.context_names(context), "tag": spec.tag}))
            return OK
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


def configure_deploy(commands: Any) -> None:
    deploy = _with_stack(commands.add_parser("deploy", help="run a model image"))
    deploy.add_argument("--target", choices=["edge", "cloud"], default="edge")
    deploy.add_argument("--image", help="image reference (from `package`)")
    deploy.add_argument("--token-name", help="pull token (default: the stack's registryPullTokenName)")
    deploy.add_argument(
        "--token-password-file", type=Path, help="file holding its password (default: a new one, valid 2 hours)"
    )
    deploy.add_argument("--app", default="edge-model", help="--target edge: container / Kubernetes app name")
    deploy.add_argument("--ssh-key", type=Path, help="the VM admin's private key file")
    deploy.add_argument(
        "--host-key-fingerprint",
        help="--target edge: the VM's SHA256 host key (default: the one the attach recorded in the stack)",
    )
    deploy.add_argument("--model", help="--target cloud: model name")
    deploy.add_argument("--version", help="--target cloud: model version")
    deploy.set_defaults(handler=cmd_deploy)


def cmd_deploy(args: argparse.Namespace) -> int:
    if args.target == "cloud":
        from dataclasses import asdict

        from training.cloud_endpoint import deploy_online

        if not (args.model and args.version):
            raise stack_outputs.OutputsError("--target cloud needs --model and --version (and --image from `package`)")
        print(json.dumps(asdict(deploy_online(_client(args), args.model, args.version, image=args.image))))
        return OK
    from edge.real_edge import HUB_CA_ON_VM
    from training import deploy

    values, source = stack_outputs.load_values(args.stack, args.outputs)
    outputs = _trusting(stack_outputs.StackOutputs.from_mapping(values, source))
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
    # The VM's host key is pinned: the one the attach recorded, or (kubernetes mode, where nothing
    # attaches over SSH) the one the operator names. Never trusted on first use here.
    fingerprint = args.host_key_fingerprint or outputs.sshHostKeyFingerprint
    if not fingerprint:
        raise stack_outputs.OutputsError(
            "--target edge needs the VM's host key: pass --host-key-fingerprint SHA256:... "
            "(ssh-keygen -lf on the VM's /etc/ssh/ssh_host_rsa_key.pub); the stack recorded none"
        )
    where = deploy.DeployTarget(
        address=outputs.hubVmPublicIp,
        username=outputs.hubVmAdminUsername,
        private_key=args.ssh_key.read_text(),
        host_key_fingerprint=fingerprint,
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
            hub_ca=outputs.hubCaCertificates,
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
            hub_ca_file=HUB_CA_ON_VM if outputs.hubCaCertificates.strip() else "",
        ),
    )
    print(json.dumps({"container": name, "image": args.image}))
    return OK


def configure_serve(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the model image's server here, on a model folder")
    serve.add_argument("--local", action="store_true", required=True, help="here, on 127.0.0.1 (no Docker)")
    serve.add_argument(
        "--model", type=Path, required=True, help="an MLflow model folder (run --local: outputs/<example>/model)"
    )
    serve.add_argument("--port", type=int, default=5001, help="port on 127.0.0.1 (default 5001, as in the image)")
    serve.add_argument("--workdir", type=Path, default=Path(".edge-training"), help="where the serving virtualenv goes")
    serve.add_argument(
        "--workers", type=_workers, help="gunicorn workers, each loading the model (default: the image's, 2)"
    )
    serve.set_defaults(handler=cmd_serve)


def _workers(text: str) -> int:
    from training.local_server import MAX_WORKERS

    try:
        workers = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= workers <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"{workers} is outside 1 to {MAX_WORKERS}")
    return workers


def cmd_serve(args: argparse.Namespace) -> int:
    from training import local_server

    return local_server.serve(args.model, root=args.workdir, port=args.port, workers=args.workers)


# --- the program ------------------------------------------------------------------------------------


def parser(prog: str = "python -m training") -> argparse.ArgumentParser:
    root = OneLineParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = root.add_subparsers(dest="command", required=True)
    configure_run(commands)
    configure_submit(commands)
    configure_register(commands)
    configure_package(commands)
    configure_deploy(commands)
    configure_serve(commands)
    return root


def _known_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the input's or the service's fault: one line, no traceback. Imported
    here, after the command ran, so that the parser stays free of SDK imports."""
    known: list[type[BaseException]] = [stack_outputs.OutputsError, UsageError, OSError, RuntimeError, ValueError]
    for module, names in (
        ("azure.core.exceptions", ("ClientAuthenticationError", "HttpResponseError", "ServiceRequestError")),
        ("azure.ai.ml.exceptions", ("MlException",)),
    ):
        loaded = sys.modules.get(module)
        known += [getattr(loaded, n) for n in names if loaded is not None and hasattr(loaded, n)]
    return tuple(known)


def _one_line(error: BaseException) -> str:
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return redact(text) or type(error).__name__


def main(argv: list[str] | None = None, prog: str = "python -m training") -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    # azure-ai-ml announces each preview class it loads; nothing a data scientist can act on.
    logging.getLogger("azure.ai.ml._utils._experimental").setLevel(logging.ERROR)
    args = parser(prog).parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if os.environ.get(DEBUG_VARIABLE):
            raise
        usage = isinstance(error, stack_outputs.OutputsError | UsageError | ValueError) or type(error).__name__ in (
            "EgressRefused",
            "LocalRunError",
            "ModelEgressRefused",
        )
        if usage or isinstance(error, _known_errors()):
            print(f"error: {_one_line(error)}", file=sys.stderr)
        else:
            print(
                f"error: unexpected {type(error).__name__}: {_one_line(error)} "
                f"(set {DEBUG_VARIABLE}=1 for the traceback)",
                file=sys.stderr,
            )
        return USAGE if usage else JOB_FAILED


def console() -> int:
    """The `edge-training` command (pyproject.toml's [project.scripts]): the same program, which
    reads relative paths from where it is run, as `python -m training` does."""
    return main(prog="edge-training")
