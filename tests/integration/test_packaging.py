"""Packaging: ``infra/package.sh`` builds the app's SAM template with ``chalice
package``, and both it and ``infra/template.yaml`` pass cfn-lint and keep the
promises the deployment relies on (schedules, VPC wiring, least-privilege IAM).

Needs the package index (chalice downloads Lambda wheels; pip's cache makes
repeat runs quick). Runs in about 15 s. The deployment zip chalice caches under
``.chalice/deployments`` is removed again if this test created it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

cfn_yaml = pytest.importorskip("cfnlint.decode.cfn_yaml", reason="cfn-lint is not installed")
chalice_config = pytest.importorskip("chalice.config", reason="chalice is not installed")

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
INFRA_TEMPLATE = REPO / "infra" / "template.yaml"
COMPOSE_FILE = REPO / "infra" / "docker-compose.yml"
CHALICE_DIR = REPO / ".chalice"
STAGES = ("dev", "prod")

# cfn-lint warnings we accept, each with the reason. Errors are never accepted.
ALLOWED_WARNINGS: dict[str, str] = {}

SSM_REF = re.compile(r"\{\{resolve:ssm:([^}:]+)\}\}")


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
