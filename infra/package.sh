#!/usr/bin/env bash
# Build the Tasklane app's CloudFormation (SAM) template and code bundle, lint both
# templates, and print the commands that deploy them.
#
#   infra/package.sh [OUTDIR]          # OUTDIR defaults to dist/<stage>
#
# Environment:
#   STAGE               chalice stage to package: dev (default) or prod
#   AWS_DEFAULT_REGION  region the template is built for (default us-east-1)
#   ARTIFACT_BUCKET     S3 bucket for the code bundle, only used in the printed commands
#
# Nothing here talks to AWS. The app template takes no parameters: the infra stack
# writes its outputs to SSM under /tasklane/<stage>/ and .chalice/config.json refers
# to them as {{resolve:ssm:...}}, which CloudFormation fills in at deploy time.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

stage="${STAGE:-dev}"
case "$stage" in
  dev | prod) ;;
  *)
    echo "package.sh: STAGE must be dev or prod, got '$stage'" >&2
    exit 2
    ;;
esac
outdir="${1:-dist/$stage}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
region="$AWS_DEFAULT_REGION"

# The project's venv when present, else whatever is on PATH.
tool() {
  if [[ -x "$repo_root/.venv/bin/$1" ]]; then
    echo "$repo_root/.venv/bin/$1"
  elif command -v "$1" >/dev/null 2>&1; then
    command -v "$1"
  else
    echo "package.sh: '$1' not found in .venv/bin or on PATH (pip install -r requirements-dev.txt)" >&2
    exit 127
  fi
}
chalice="$(tool chalice)"
cfn_lint="$(tool cfn-lint)"

# Drop the outputs of an earlier build (only ours: OUTDIR may be any directory).
rm -f "$outdir/sam.yaml" "$outdir/deployment.zip" "$outdir/packaged.yaml"
mkdir -p "$outdir"

echo "==> chalice package (stage $stage, region $region) -> $outdir"
# Fixed function names (the stack must be tasklane-<stage>) so the drainer can invoke
# the executor function and the API can wake the drain function by name.
"$chalice" package --stage "$stage" --pkg-format cloudformation --template-format yaml \
  --merge-template infra/app-overrides.json "$outdir"
if [[ ! -f "$outdir/sam.yaml" || ! -f "$outdir/deployment.zip" ]]; then
  echo "package.sh: chalice package did not write $outdir/sam.yaml and deployment.zip" >&2
  exit 1
fi

# Lambda's /var/task is read-only, so a cold start compiles every module it imports
# unless the zip carries the bytecode: add it, for the runtime chalice targeted (the
# Python it runs under; precompile.py refuses any other, the magic number would differ).
runtime="$(sed -n 's/^ *Runtime: *\(python3\.[0-9]*\) *$/\1/p' "$outdir/sam.yaml" | sort -u)"
if [[ "$(echo "$runtime" | wc -l)" != 1 || -z "$runtime" ]]; then
  echo "package.sh: expected one python Runtime in $outdir/sam.yaml, found: ${runtime:-none}" >&2
  exit 1
fi
echo "==> bytecode for $runtime into $outdir/deployment.zip"
"$(tool python)" infra/precompile.py "$outdir/deployment.zip" "$runtime"

echo "==> cfn-lint infra/template.yaml $outdir/sam.yaml"
# Errors fail the build; warnings are printed but do not.
"$cfn_lint" --non-zero-exit-code error -- infra/template.yaml "$outdir/sam.yaml"
echo "    no errors"

artifact_bucket="${ARTIFACT_BUCKET:-<an-S3-bucket-in-$region-for-code>}"
cat <<EOF

==> Built $outdir/sam.yaml and $outdir/deployment.zip. To deploy stage '$stage':

# 1. Infrastructure (VPC, RDS, ElastiCache, S3, SSM parameters). First time ~15-20 min.
#    Add EnableNatGateway=true if executors use the SES API or the internet.
aws cloudformation deploy --region $region \\
  --stack-name tasklane-$stage-infra \\
  --template-file infra/template.yaml \\
  --parameter-overrides Stage=$stage SesSender=<verified-sender@your-domain> \\
  --capabilities CAPABILITY_IAM

aws cloudformation describe-stacks --region $region --stack-name tasklane-$stage-infra \\
  --query 'Stacks[0].Outputs[].[OutputKey,OutputValue]' --output table

# The bearer token GET /metrics wants (Prometheus' scrape config):
aws secretsmanager get-secret-value --region $region \\
  --secret-id tasklane/$stage/metrics-token --query SecretString --output text

# 2. The app. Its template reads the infra outputs from SSM (/tasklane/$stage/...),
#    so no parameters are passed. The stack name must be tasklane-$stage: function
#    names start with it, and the IAM policies in .chalice/ are scoped to tasklane-$stage-*.
aws cloudformation package --region $region \\
  --template-file $outdir/sam.yaml \\
  --s3-bucket $artifact_bucket \\
  --output-template-file $outdir/packaged.yaml

aws cloudformation deploy --region $region \\
  --stack-name tasklane-$stage \\
  --template-file $outdir/packaged.yaml \\
  --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND

aws cloudformation describe-stacks --region $region --stack-name tasklane-$stage \\
  --query "Stacks[0].Outputs[?OutputKey=='EndpointURL'].OutputValue" --output text
EOF
