"""Packaging: ``infra/package.sh`` builds the app's SAM template with ``chalice
package``, and both it and ``infra/template.yaml`` pass cfn-lint and checkov and
keep the promises the deployment relies on (schedules, VPC wiring, least-privilege
IAM, reserved concurrency), every compiled file in ``deployment.zip`` is one the
Lambda runtime can load (wheel tags, ELF machine, glibc symbol versions), and the zip
carries the bytecode of its modules for the runtime's Python, which a cold import uses.

Both stages are packaged once per session (the ``packaged`` fixture) and every
assertion here reuses that build. Needs the package index (chalice downloads Lambda
wheels; pip's cache makes repeat runs quick) and checkov in its own virtualenv,
``.venv-checkov`` (``make checkov-venv``: checkov's pins would downgrade boto3,
botocore and packaging in the project's venv). About 60 s with a warm pip cache.
The deployment zip chalice caches under ``.chalice/deployments`` is removed again
if this test created it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chalice.config as chalice_config
import pytest
import yaml
from cfnlint.decode import cfn_yaml

# chalice and cfn-lint come with the dev requirements make test installs, and are
# imported plainly: without them this module fails instead of skipping (a skip would
# pass CI having checked no template).
pytestmark = pytest.mark.timeout(600)  # the first test pays for packaging both stages

REPO = Path(__file__).resolve().parents[2]
INFRA_TEMPLATE = REPO / "infra" / "template.yaml"
COMPOSE_FILE = REPO / "infra" / "docker-compose.yml"
CHALICE_DIR = REPO / ".chalice"
STAGES = ("dev", "prod")

# cfn-lint warnings we accept, each with the reason. Errors are never accepted.
ALLOWED_WARNINGS: dict[str, str] = {}

SSM_REF = re.compile(r"\{\{resolve:ssm:([^}:]+)\}\}")

# glibc of each Lambda Python runtime: python3.10/3.11 run on Amazon Linux 2,
# python3.12+ on Amazon Linux 2023. Chalice picks the runtime from the Python it runs
# under (chalice.config.Config.lambda_python_version), so this venv's Python decides.
RUNTIME_GLIBC: dict[str, tuple[int, int]] = {
    "python3.10": (2, 26),
    "python3.11": (2, 26),
    "python3.12": (2, 34),
    "python3.13": (2, 34),
    "python3.14": (2, 34),
}
LAMBDA_MACHINE = {"x86_64": "x86_64", "arm64": "aarch64"}  # Lambda architecture -> wheel/ELF machine
ELF_MACHINE = {62: "x86_64", 183: "aarch64"}  # ELF e_machine
MANYLINUX_LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
GLIBC_SYMBOL = re.compile(rb"GLIBC_(\d+)\.(\d+)")
SHARED_OBJECT = re.compile(r"\.so(\.[\d.]+)?$")

# checkov findings we keep, by check id and the logical ids they may name, each with
# its reason; infra/deploy.md ("checkov findings we keep") lists them too. Anything
# else fails, and so does an entry that no longer matches a finding.
FUNCTIONS = frozenset({"APIHandler", "Drain", "Sweep", "Executor"})
ROLES = frozenset({"ApiHandlerRole", "DrainRole", "SweepRole", "ExecutorRole"})
SECRETS = frozenset({"DatabaseSecret", "RedisAuthSecret", "MetricsTokenSecret"})
CHECKOV_KEPT: dict[str, tuple[frozenset[str], str]] = {
    "CKV_AWS_149": (SECRETS, "secrets use the aws/secretsmanager key; IAM scopes who reads them"),
    "CKV_AWS_158": (
        frozenset({"DatabaseLogGroup", "ApiAccessLogs"}),
        "CloudWatch Logs encrypts at rest; the logs hold no secrets",
    ),
    "CKV_AWS_157": (frozenset({"Database"}), "Multi-AZ is on for prod (IsProd); dev is single-AZ to save cost"),
    "CKV_AWS_161": (frozenset({"Database"}), "password auth from the secret; IAM tokens cap new connections/s"),
    "CKV_AWS_18": (frozenset({"DocumentsBucket"}), "generated documents; CloudTrail data events if audit is needed"),
    "CKV_AWS_21": (frozenset({"DocumentsBucket"}), "documents are regenerated from the task; no versions to keep"),
    "CKV_AWS_116": (FUNCTIONS, "no async payload to lose: state is in PostgreSQL, the sweeper retries"),
    "CKV_AWS_173": (FUNCTIONS, "env vars hold ARNs and names only; Lambda encrypts them at rest"),
    "CKV_AWS_111": (ROLES, "ec2 ENI and xray actions have no resource-level permissions"),
    "CKV_AWS_120": (frozenset({"RestAPI"}), "a task queue API must not serve cached task state"),
}


def _tool(name: str) -> str:
    """The venv's copy of a console script, else the one on PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -r requirements-dev.txt")
    return found


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Runs ``infra/package.sh`` for each stage; yields ``{stage: outdir}``."""
    deployments = CHALICE_DIR / "deployments"
    before = set(deployments.glob("*.zip")) if deployments.exists() else set()
    outdirs: dict[str, Path] = {}
    try:
        for stage in STAGES:
            outdir = tmp_path_factory.mktemp(f"package-{stage}")
            env = {**os.environ, "STAGE": stage, "AWS_DEFAULT_REGION": "us-east-1"}
            env.pop("ARTIFACT_BUCKET", None)
            proc = subprocess.run(
                ["bash", str(REPO / "infra" / "package.sh"), str(outdir)],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=240,
            )
            assert proc.returncode == 0, (
                f"infra/package.sh failed for stage {stage} (rc={proc.returncode})\n"
                f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
            )
            assert "aws cloudformation deploy" in proc.stdout
            assert f"--stack-name tasklane-{stage}-infra" in proc.stdout
            assert f"--stack-name tasklane-{stage} " in proc.stdout
            assert (outdir / "deployment.zip").stat().st_size > 0
            outdirs[stage] = outdir
        yield outdirs
    finally:
        if deployments.exists():
            for created in set(deployments.glob("*.zip")) - before:
                created.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def app_templates(packaged: dict[str, Path]) -> dict[str, dict[str, Any]]:
    return {stage: yaml.safe_load((outdir / "sam.yaml").read_text()) for stage, outdir in packaged.items()}


@pytest.fixture(scope="module")
def infra_template() -> dict[str, Any]:
    # cfn-lint's loader understands the short intrinsic tags (!Ref, !Sub, ...).
    loaded: dict[str, Any] = dict(cfn_yaml.load(str(INFRA_TEMPLATE)))
    return loaded


@pytest.fixture(scope="module")
def lint_findings(packaged: dict[str, Path]) -> list[dict[str, Any]]:
    templates = [str(INFRA_TEMPLATE)] + [str(outdir / "sam.yaml") for outdir in packaged.values()]
    proc = subprocess.run(
        [_tool("cfn-lint"), "--format", "json", "--", *templates],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.stdout.strip(), f"cfn-lint printed nothing (rc={proc.returncode}): {proc.stderr}"
    findings: list[dict[str, Any]] = json.loads(proc.stdout)
    return findings


def _functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: res["Properties"]
        for name, res in template["Resources"].items()
        if res["Type"] in ("AWS::Serverless::Function", "AWS::Lambda::Function")
    }


def _function_by_handler(template: dict[str, Any], handler: str) -> dict[str, Any]:
    matches = [props for props in _functions(template).values() if props.get("Handler") == handler]
    assert len(matches) == 1, f"expected one function with handler {handler}, found {len(matches)}"
    return matches[0]


def _policy_statements(node: Any) -> Iterator[dict[str, Any]]:
    """Every statement of every policy document anywhere under ``node``."""
    if isinstance(node, dict):
        statements = node.get("Statement")
        if isinstance(statements, list):
            yield from (s for s in statements if isinstance(s, dict))
        elif isinstance(statements, dict):
            yield statements
        for value in node.values():
            yield from _policy_statements(value)
    elif isinstance(node, list):
        for value in node:
            yield from _policy_statements(value)


def _actions(statement: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for key in ("Action", "NotAction"):
        value = statement.get(key, [])
        found.extend([value] if isinstance(value, str) else value)
    return found


def _wildcard_actions(statements: list[dict[str, Any]]) -> list[str]:
    return [a for s in statements for a in _actions(s) if a == "*" or a.endswith(":*")]


def _stage_config(stage: str) -> Any:
    config = json.loads((CHALICE_DIR / "config.json").read_text())
    return chalice_config.Config(chalice_stage=stage, config_from_disk=config)


# --------------------------------------------------------------------- lint


def test_cfn_lint_finds_no_errors_in_either_template(lint_findings: list[dict[str, Any]]) -> None:
    errors = [f for f in lint_findings if f["Level"] == "Error"]
    assert not errors, json.dumps(errors, indent=2)


def test_cfn_lint_warnings_are_all_explained(lint_findings: list[dict[str, Any]]) -> None:
    unexplained = [f for f in lint_findings if f["Level"] == "Warning" and f["Rule"]["Id"] not in ALLOWED_WARNINGS]
    assert not unexplained, json.dumps(unexplained, indent=2)


# --------------------------------------------------------------- app (SAM)


@pytest.mark.parametrize("stage", STAGES)
def test_app_template_has_a_rest_api(app_templates: dict[str, dict[str, Any]], stage: str) -> None:
    types = {res["Type"] for res in app_templates[stage]["Resources"].values()}
    assert types & {"AWS::Serverless::Api", "AWS::ApiGateway::RestApi"}


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize(("handler", "timeout"), [("app.drain", 900), ("app.sweep", 300)])
def test_scheduled_functions_run_every_minute(
    app_templates: dict[str, dict[str, Any]], stage: str, handler: str, timeout: int
) -> None:
    props = _function_by_handler(app_templates[stage], handler)
    schedules = [ev["Properties"]["Schedule"] for ev in props.get("Events", {}).values() if ev["Type"] == "Schedule"]
    assert schedules == ["rate(1 minute)"]
    assert props["Timeout"] == timeout


@pytest.mark.parametrize("stage", STAGES)
def test_api_handler_is_short_lived(app_templates: dict[str, dict[str, Any]], stage: str) -> None:
    assert _function_by_handler(app_templates[stage], "app.app")["Timeout"] <= 30


@pytest.mark.parametrize("stage", STAGES)
def test_every_function_runs_in_the_vpc_with_eni_permissions(
    app_templates: dict[str, dict[str, Any]], stage: str
) -> None:
    template = app_templates[stage]
    for name, props in _functions(template).items():
        vpc = props.get("VpcConfig")
        assert vpc, f"{name} has no VpcConfig"
        assert len(vpc["SubnetIds"]) == 2 and len(vpc["SecurityGroupIds"]) == 1, name
        role_name = props["Role"]["Fn::GetAtt"][0]
        actions = {a for s in _policy_statements(template["Resources"][role_name]) for a in _actions(s)}
        assert {"ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface"} <= actions, name


@pytest.mark.parametrize("stage", STAGES)
def test_app_settings_resolve_to_parameters_the_infra_stack_writes(
    app_templates: dict[str, dict[str, Any]], infra_template: dict[str, Any], stage: str
) -> None:
    written = {
        res["Properties"]["Name"]["Fn::Sub"].replace("${Stage}", stage)
        for res in infra_template["Resources"].values()
        if res["Type"] == "AWS::SSM::Parameter"
    }
    referenced = set(SSM_REF.findall(json.dumps(app_templates[stage])))
    assert referenced, "expected the app template to resolve settings from SSM"
    assert referenced <= written, f"not written by infra/template.yaml: {sorted(referenced - written)}"


@pytest.mark.parametrize("stage", STAGES)
def test_functions_get_the_database_and_redis_settings(app_templates: dict[str, dict[str, Any]], stage: str) -> None:
    for name, props in _functions(app_templates[stage]).items():
        env = props["Environment"]["Variables"]
        for var in ("TASKLANE_DATABASE_SECRET_ARN", "TASKLANE_REDIS_URL", "TASKLANE_S3_BUCKET"):
            assert var in env, f"{name} lacks {var}"


@pytest.mark.parametrize("stage", STAGES)
def test_roles_use_the_policy_files_not_chalices_generated_policy(
    app_templates: dict[str, dict[str, Any]], stage: str
) -> None:
    config = _stage_config(stage)
    assert config.autogen_policy is False
    for res in app_templates[stage]["Resources"].values():
        if res["Type"] == "AWS::IAM::Role":
            resources = [s.get("Resource") for s in _policy_statements(res["Properties"]["Policies"])]
            assert "arn:*:logs:*:*:*" not in resources


# ------------------------------------------------------------------- IAM


def test_no_policy_anywhere_grants_a_wildcard_action(
    app_templates: dict[str, dict[str, Any]], infra_template: dict[str, Any]
) -> None:
    statements = list(_policy_statements(infra_template))
    for template in app_templates.values():
        statements += list(_policy_statements(template))
    for policy_file in sorted(CHALICE_DIR.glob("policy-*.json")):
        statements += list(_policy_statements(json.loads(policy_file.read_text())))
    assert len(statements) > 20, "too few policy statements found; is the walk broken?"
    assert not _wildcard_actions(statements)


def test_wildcard_action_detector_catches_service_wildcards() -> None:
    assert _wildcard_actions([{"Action": "*"}, {"Action": ["s3:GetObject", "ses:*"]}, {"NotAction": "iam:*"}]) == [
        "*",
        "ses:*",
        "iam:*",
    ]


@pytest.mark.parametrize("stage", STAGES)
def test_policy_resources_are_scoped_to_the_stage(stage: str) -> None:
    # Resource "*" only where AWS offers no resource-level permission.
    unscoped_ok = {"ec2", "xray", "cloudwatch"}
    for policy_file in CHALICE_DIR.glob(f"policy-{stage}*.json"):
        for statement in _policy_statements(json.loads(policy_file.read_text())):
            resources = statement["Resource"]
            resources = [resources] if isinstance(resources, str) else resources
            services = {a.split(":")[0] for a in _actions(statement)}
            if "*" in resources:
                assert services <= unscoped_ok, f"{policy_file.name}: {statement['Sid']}"
            else:
                assert all(
                    f"tasklane-{stage}" in r or f"tasklane/{stage}" in r or r.startswith("arn:aws:ses:")
                    for r in resources
                ), f"{policy_file.name}: {statement['Sid']}"


# ------------------------------------------------------------------ infra


def test_infra_outputs_what_the_app_stage_consumes(infra_template: dict[str, Any]) -> None:
    outputs = infra_template["Outputs"]
    for key in (
        "SubnetIds",
        "LambdaSecurityGroupId",
        "DatabaseSecretArn",
        "DatabaseEndpoint",
        "RedisEndpoint",
        "BucketName",
    ):
        assert key in outputs, key
    assert outputs["RedisEndpoint"]["Value"]["Fn::Sub"].startswith("rediss://")


def test_infra_keeps_data_stores_private_and_encrypted(infra_template: dict[str, Any]) -> None:
    res = infra_template["Resources"]
    db = res["Database"]["Properties"]
    assert db["PubliclyAccessible"] is False and db["StorageEncrypted"] is True
    version = infra_template["Parameters"][db["EngineVersion"]["Ref"]]["Default"]
    assert db["Engine"] == "postgres" and int(version.split(".")[0]) >= 15
    cache = res["Cache"]["Properties"]
    assert cache["TransitEncryptionEnabled"] is True and cache["AtRestEncryptionEnabled"] is True
    block = res["DocumentsBucket"]["Properties"]["PublicAccessBlockConfiguration"]
    assert all(block[k] is True for k in block)


# ------------------------------------------------------------------ local


def test_local_stage_has_no_aws_wiring() -> None:
    config = _stage_config("local")
    assert not config.subnet_ids and not config.security_group_ids
    assert not any("{{resolve" in v for v in config.environment_variables.values())
    assert "TASKLANE_DATABASE_URL" not in config.environment_variables  # local discovery decides


def test_docker_compose_parses_with_the_expected_services() -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "localstack"}
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    ports = {name: [p.rsplit(":", 1)[-1] for p in svc["ports"]] for name, svc in services.items()}
    assert ports == {"postgres": ["5432"], "redis": ["6379"], "localstack": ["4566"]}
    for name, svc in services.items():
        assert svc["healthcheck"]["test"], name
    wanted = {"s3", "ses", "sns", "ssm", "secretsmanager", "lambda"}
    assert wanted <= set(services["localstack"]["environment"]["SERVICES"].split(","))


# ------------------------------------------------------ deployment package


def _lambda_target(template: dict[str, Any]) -> tuple[str, str]:
    """(runtime, architecture) shared by every function: they all run the same zip."""
    targets = {
        (props["Runtime"], (props.get("Architectures") or ["x86_64"])[0]) for props in _functions(template).values()
    }
    assert len(targets) == 1, f"functions disagree on runtime/architecture: {sorted(targets)}"
    return targets.pop()


def _platform_problem(platform: str, machine: str, glibc: tuple[int, int]) -> str | None:
    """Why a wheel platform tag cannot load on (machine, glibc), or None if it can."""
    if platform == "any":
        return None
    if platform.startswith("linux_"):
        return f"{platform} is a wheel built on this machine, not a manylinux one"
    legacy = re.fullmatch(r"(manylinux1|manylinux2010|manylinux2014)_(\w+)", platform)
    perennial = re.fullmatch(r"manylinux_(\d+)_(\d+)_(\w+)", platform)
    if legacy:
        needs, arch = MANYLINUX_LEGACY[legacy.group(1)], legacy.group(2)
    elif perennial:
        needs, arch = (int(perennial.group(1)), int(perennial.group(2))), perennial.group(3)
    else:
        return f"{platform} is not a Linux platform Lambda runs"
    if arch != machine:
        return f"{platform} is for {arch}, the function runs on {machine}"
    if needs > glibc:
        return f"{platform} needs glibc {needs[0]}.{needs[1]}, the runtime has {glibc[0]}.{glibc[1]}"
    return None


def _package_problems(zip_path: Path, runtime: str, architecture: str) -> list[str]:
    """Every wheel and shared object in ``zip_path`` the Lambda runtime could not load."""
    glibc = RUNTIME_GLIBC[runtime]
    machine = LAMBDA_MACHINE[architecture]
    cpython = "cp" + runtime.removeprefix("python").replace(".", "")
    problems: list[str] = []
    with zipfile.ZipFile(zip_path) as bundle:
        for name in bundle.namelist():
            if name.endswith(".dist-info/WHEEL"):
                dist = name.split("/")[-2].removesuffix(".dist-info")
                tags = [
                    line.split(":", 1)[1].strip()
                    for line in bundle.read(name).decode().splitlines()
                    if line.startswith("Tag:")
                ]
                if not tags:
                    problems.append(f"{dist}: WHEEL has no Tag lines")
                    continue
                tag_problems = []
                for tag in tags:
                    interpreter, abi, platform = tag.split("-")
                    why = _platform_problem(platform, machine, glibc)
                    if why is None and abi not in ("none", "abi3", cpython):
                        why = f"ABI {abi} is not {cpython}"
                    if why is None and interpreter.startswith("cp") and abi != "abi3" and interpreter != cpython:
                        why = f"interpreter {interpreter} is not {cpython}"
                    tag_problems.append((tag, why))
                built_here = [tag for tag, why in tag_problems if "built on this machine" in str(why)]
                if built_here or all(why for _, why in tag_problems):
                    reasons = "; ".join(f"{tag}: {why}" for tag, why in tag_problems if why)
                    problems.append(f"{dist}: no tag loads on {runtime}/{architecture} ({reasons})")
            elif SHARED_OBJECT.search(name):
                data = bundle.read(name)
                if data[:4] != b"\x7fELF":
                    continue  # e.g. a linker script
                e_machine = int.from_bytes(data[18:20], "big" if data[5] == 2 else "little")
                elf_arch = ELF_MACHINE.get(e_machine, f"e_machine {e_machine}")
                if elf_arch != machine:
                    problems.append(f"{name}: built for {elf_arch}, the function runs on {machine}")
                needed = max(((int(a), int(b)) for a, b in GLIBC_SYMBOL.findall(data)), default=(0, 0))
                if needed > glibc:
                    problems.append(
                        f"{name}: needs GLIBC_{needed[0]}.{needed[1]}, {runtime} has glibc {glibc[0]}.{glibc[1]}"
                    )
                abi_tag = re.search(r"\.cpython-(\d+)-(\w+?)-linux-gnu\.so$", name)
                if abi_tag and ("cp" + abi_tag.group(1), abi_tag.group(2)) != (cpython, machine):
                    problems.append(f"{name}: extension for cp{abi_tag.group(1)}/{abi_tag.group(2)}")
    return problems


def _requirement_names() -> set[str]:
    names = set()
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(re.split(r"[\[<>=!~; ]", line, maxsplit=1)[0])
    return names


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("stage", STAGES)
def test_every_compiled_file_in_the_package_loads_on_the_lambda_runtime(
    packaged: dict[str, Path], app_templates: dict[str, dict[str, Any]], stage: str
) -> None:
    runtime, architecture = _lambda_target(app_templates[stage])
    assert runtime in RUNTIME_GLIBC, f"no glibc known for runtime {runtime}"
    zip_path = packaged[stage] / "deployment.zip"
    with zipfile.ZipFile(zip_path) as bundle:
        names = bundle.namelist()
    assert sum(n.endswith(".dist-info/WHEEL") for n in names) >= 10, "too few wheels found; is the walk broken?"
    assert any(SHARED_OBJECT.search(n) for n in names), "no shared objects found; is the walk broken?"
    problems = _package_problems(zip_path, runtime, architecture)
    assert not problems, (
        f"deployment.zip for {stage} ({runtime}, {architecture}) has files Lambda cannot load; pin versions "
        "with manylinux wheels for this runtime in requirements.txt:\n  " + "\n  ".join(problems)
    )


@pytest.mark.parametrize("stage", STAGES)
def test_every_requirement_is_in_the_package(packaged: dict[str, Path], stage: str) -> None:
    # chalice leaves out (with only a warning) a package it found no compatible wheel for.
    with zipfile.ZipFile(packaged[stage] / "deployment.zip") as bundle:
        dists = {
            _canonical(n.split("/")[0].removesuffix(".dist-info").rsplit("-", 1)[0])
            for n in bundle.namelist()
            if n.split("/")[0].endswith(".dist-info")
        }
    # psycopg[binary]: Lambda has no libpq, so psycopg needs the binary package.
    wanted = {_canonical(n) for n in _requirement_names()} | {"psycopg-binary", "psycopg-pool"}
    assert wanted <= dists, f"missing from deployment.zip: {sorted(wanted - dists)}"


def _fake_package(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as bundle:
        for name, data in files.items():
            bundle.writestr(name, data)
    return path


def _elf(machine: int, *symbols: bytes) -> bytes:
    header = b"\x7fELF\x02\x01\x01" + bytes(11) + machine.to_bytes(2, "little")
    return header + bytes(40) + b"\0".join(symbols)


def test_package_checker_rejects_what_lambda_cannot_load(tmp_path: Path) -> None:
    def wheel(*tags: str) -> bytes:
        return ("Wheel-Version: 1.0\n" + "".join(f"Tag: {t}\n" for t in tags)).encode()

    good = _fake_package(
        tmp_path / "good.zip",
        {
            "a-1.dist-info/WHEEL": wheel("py3-none-any"),
            "b-1.dist-info/WHEEL": wheel("cp311-cp311-manylinux_2_5_x86_64", "cp311-cp311-manylinux_2_28_x86_64"),
            "c-1.dist-info/WHEEL": wheel("cp311-abi3-manylinux2014_x86_64"),
            "b/_x.cpython-311-x86_64-linux-gnu.so": _elf(62, b"GLIBC_2.2.5", b"GLIBC_2.17"),
        },
    )
    assert _package_problems(good, "python3.11", "x86_64") == []
    bad = _fake_package(
        tmp_path / "bad.zip",
        {
            "pillow-13.0.0.dist-info/WHEEL": wheel("cp311-cp311-linux_x86_64"),
            "d-1.dist-info/WHEEL": wheel("cp311-cp311-manylinux_2_28_x86_64"),
            "e-1.dist-info/WHEEL": wheel("cp311-cp311-manylinux2014_aarch64"),
            "f-1.dist-info/WHEEL": wheel("cp312-cp312-manylinux2014_x86_64"),
            "g/_y.cpython-311-x86_64-linux-gnu.so": _elf(62, b"GLIBC_2.34"),
            "h/_z.cpython-311-aarch64-linux-gnu.so": _elf(183, b"GLIBC_2.17"),
        },
    )
    problems = "\n".join(_package_problems(bad, "python3.11", "x86_64"))
    for culprit in ("pillow-13.0.0", "d-1", "e-1", "f-1", "_y.cpython", "_z.cpython"):
        assert culprit in problems, culprit
    assert "built on this machine" in problems and "needs GLIBC_2.34" in problems
    # python3.12 (Amazon Linux 2023, glibc 2.34) accepts manylinux_2_28 wheels.
    assert _platform_problem("manylinux_2_28_x86_64", "x86_64", RUNTIME_GLIBC["python3.12"]) is None
    assert _platform_problem("manylinux_2_28_aarch64", "aarch64", RUNTIME_GLIBC["python3.11"])


@pytest.mark.parametrize("stage", STAGES)
def test_functions_have_reserved_concurrency_within_the_database_budget(
    app_templates: dict[str, dict[str, Any]], stage: str
) -> None:
    # infra/deploy.md, "Concurrency and database connections": every execution
    # environment holds at most TASKLANE_POOL_MAX_SIZE connections.
    budget = 80  # db.t4g.micro (the DBInstanceClass default): ~100 max_connections less ops headroom
    total = 0
    for name, props in _functions(app_templates[stage]).items():
        reserved = props.get("ReservedConcurrentExecutions")
        assert isinstance(reserved, int) and reserved > 0, f"{name} has no reserved concurrency"
        pool = int(props["Environment"]["Variables"].get("TASKLANE_POOL_MAX_SIZE", "4"))
        total += reserved * pool
    assert total <= budget, f"{stage}: functions may open {total} connections, the budget is {budget}"


@pytest.mark.parametrize("stage", STAGES)
def test_no_secret_reaches_lambda_as_an_environment_value(app_templates: dict[str, dict[str, Any]], stage: str) -> None:
    for name, props in _functions(app_templates[stage]).items():
        env = props["Environment"]["Variables"]
        assert "TASKLANE_METRICS_TOKEN" not in env, name
        for var in ("TASKLANE_REDIS_AUTH_SECRET_ARN", "TASKLANE_METRICS_TOKEN_SECRET_ARN"):
            assert env.get(var, "").endswith("-secret-arn}}"), f"{name}: {var} should resolve a secret's ARN"
        assert not any("resolve:secretsmanager" in json.dumps(v) for v in env.values()), name


# ------------------------------------------------------ bytecode in the package

# A cold start's imports: app.py, then what the API's first submit and the drain
# function's first call import (bench/coldstart.py's probes).
COLD_IMPORTS = (
    "import app, chalicelib.container, chalicelib.api.params, chalicelib.api.presenters, "
    "chalicelib.services.submit, chalicelib.entrypoints, chalicelib.services.drain"
)
# Runs in the unpacked zip: every module loaded from it, and those compiled from source
# (SourceLoader.source_to_code runs only when no usable .pyc was found).
COLD_IMPORT_PROBE = f"""
import importlib._bootstrap_external as bootstrap, json, os, sys
compiled = []
to_code = bootstrap.SourceLoader.source_to_code
def recording(self, data, path, *args, **kwargs):
    compiled.append(path)
    return to_code(self, data, path, *args, **kwargs)
bootstrap.SourceLoader.source_to_code = recording
{COLD_IMPORTS}
root = os.getcwd() + os.sep
loaded = sorted(m.__file__ for m in list(sys.modules.values()) if (getattr(m, "__file__", None) or "").startswith(root))
print(json.dumps({{"loaded": loaded, "compiled": [p for p in compiled if p.startswith(root)]}}))
"""


def _lambda_pyc_name(source: str) -> str:
    """Where Lambda's Python looks for ``source``'s bytecode: ``__pycache__`` beside it.
    This interpreter may have a pycache prefix (PYTHONPYCACHEPREFIX: the suite sets one
    for its processes when PYTHONDONTWRITEBYTECODE is set, tests/conftest.py), which
    ``cache_from_source`` would put in front; Lambda has none."""
    prefix, sys.pycache_prefix = sys.pycache_prefix, None
    try:
        return importlib.util.cache_from_source(source)
    finally:
        sys.pycache_prefix = prefix


def _pyc_header(pyc: bytes) -> tuple[bytes, int, bytes]:
    """(magic, flags, source hash) of a hash-based .pyc (PEP 552)."""
    return pyc[:4], int.from_bytes(pyc[4:8], "little"), pyc[8:16]


@pytest.mark.parametrize("stage", STAGES)
def test_package_has_unchecked_bytecode_of_every_module_for_its_runtime(
    packaged: dict[str, Path], app_templates: dict[str, dict[str, Any]], stage: str
) -> None:
    runtime, _ = _lambda_target(app_templates[stage])
    # Bytecode is per minor version; this test reads it with the Python that wrote it.
    assert runtime == f"python{sys.version_info.major}.{sys.version_info.minor}", runtime
    with zipfile.ZipFile(packaged[stage] / "deployment.zip") as bundle:
        names = set(bundle.namelist())
        sources = sorted(n for n in names if n.endswith(".py"))
        missing, wrong = [], []
        for source in sources:
            pyc_name = _lambda_pyc_name(source)
            code = bundle.read(source)
            if pyc_name not in names:
                try:
                    compile(code, source, "exec", dont_inherit=True)
                except (SyntaxError, ValueError):
                    continue  # never importable: precompile.py leaves it as it is
                missing.append(source)
                continue
            magic, flags, source_hash = _pyc_header(bundle.read(pyc_name))
            # flags 0b01: hash-based, not checked against the source (which Lambda unpacks
            # with mtimes of its own), so the hash must be the shipped source's own.
            expected = (importlib.util.MAGIC_NUMBER, 0b01, importlib.util.source_hash(code))
            if (magic, flags, source_hash) != expected:
                wrong.append(f"{pyc_name}: magic {magic!r}, flags {flags}, source hash {source_hash.hex()}")
    assert len(sources) > 1000, "too few sources found; is the walk broken?"
    assert {"app.py", "chalicelib/__init__.py", "chalice/app.py"} <= set(sources)
    assert not missing, f"{stage}: {len(missing)} modules without bytecode, e.g. {missing[:5]}"
    assert not wrong, f"{stage}: bytecode that would not load as shipped: {wrong[:5]}"


def test_a_cold_import_of_the_package_compiles_nothing(packaged: dict[str, Path], tmp_path: Path) -> None:
    """What Lambda does: import from the unpacked zip, where nothing can be written."""
    with zipfile.ZipFile(packaged["prod"] / "deployment.zip") as bundle:
        bundle.extractall(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TASKLANE_"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", COLD_IMPORT_PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert any(f.endswith("/chalice/app.py") for f in seen["loaded"]), "chalice did not come from the zip"
    assert len(seen["loaded"]) > 100, seen["loaded"]
    assert seen["compiled"] == [], f"compiled from source at a cold start: {seen['compiled'][:10]}"


def test_precompile_refuses_a_runtime_other_than_its_own_python(tmp_path: Path) -> None:
    bundle = _fake_package(tmp_path / "deployment.zip", {"app.py": b"x = 1\n"})
    proc = subprocess.run(
        [sys.executable, str(REPO / "infra" / "precompile.py"), str(bundle), "python2.7"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "targets python2.7" in proc.stderr, proc.stderr
    with zipfile.ZipFile(bundle) as unchanged:
        assert unchanged.namelist() == ["app.py"]


def test_deployment_zip_has_no_developer_tooling(packaged: dict[str, Path]) -> None:
    """Developer tooling (tools/, the local stack, devservices, the emulator, CLIs) stays out
    of the Lambda bundle. Passes once chalicelib's tooling has moved to tools/."""
    tooling = {"local.py", "emulator.py", "cli.py", "opscli.py"}
    for stage, outdir in packaged.items():
        with zipfile.ZipFile(outdir / "deployment.zip") as bundle:
            found = [
                n
                for n in bundle.namelist()
                if n.startswith("tools/")
                or (n.startswith("chalicelib/") and ("devservices" in n.split("/") or n.split("/")[-1] in tooling))
            ]
        assert not found, f"{stage}: developer tooling in deployment.zip: {found}"


# ---------------------------------------------------------------- checkov


def _checkov() -> str:
    found = os.environ.get("CHECKOV") or str(REPO / ".venv-checkov" / "bin" / "checkov")
    if not Path(found).exists():
        pytest.fail(f"checkov is not installed at {found}: run `make checkov-venv` (its own virtualenv)")
    return found


@pytest.fixture(scope="module")
def checkov_findings(packaged: dict[str, Path]) -> list[dict[str, Any]]:
    templates = [INFRA_TEMPLATE] + [outdir / "sam.yaml" for outdir in packaged.values()]
    args = [_checkov(), "--framework", "cloudformation", "--output", "json", "--quiet", "--skip-download"]
    for template in templates:
        args += ["--file", str(template)]
    # No calls home (guidelines, mappings): only package registries are reachable.
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip(), f"checkov printed nothing (rc={proc.returncode}): {proc.stderr[-2000:]}"
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert all(r["summary"]["parsing_errors"] == 0 for r in reports), proc.stdout[:2000]
    assert sum(r["summary"]["passed"] for r in reports) > 50, "checkov passed too few checks; did it read the files?"
    return [f for r in reports for f in r["results"]["failed_checks"]]


def _logical_id(finding: dict[str, Any]) -> str:
    return str(finding["resource"]).rsplit(".", 1)[-1]


def test_checkov_findings_are_all_kept_on_purpose(checkov_findings: list[dict[str, Any]]) -> None:
    unexplained = [
        f"{f['check_id']} {f['resource']} in {Path(f['file_path']).name}: {f['check_name']}"
        for f in checkov_findings
        if _logical_id(f) not in CHECKOV_KEPT.get(f["check_id"], (frozenset(), ""))[0]
    ]
    assert not unexplained, "fix these, or keep them in CHECKOV_KEPT and infra/deploy.md with a reason:\n  " + (
        "\n  ".join(unexplained)
    )


def test_checkov_kept_findings_still_occur_and_are_documented(checkov_findings: list[dict[str, Any]]) -> None:
    seen = {f["check_id"] for f in checkov_findings}
    assert not set(CHECKOV_KEPT) - seen, f"kept but no longer found, drop them: {sorted(set(CHECKOV_KEPT) - seen)}"
    deploy_md = (REPO / "infra" / "deploy.md").read_text()
    assert not [c for c in CHECKOV_KEPT if c not in deploy_md], "infra/deploy.md must list every kept finding"
