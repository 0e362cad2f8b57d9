"""infra/: every .tf parses (python-hcl2), checkov passes with only justified skips, and the structure
holds what the design promises: GitHub federation limited to one repository and ref, a promotion
account that can only read and move aliases, least-privilege bindings, a tainted GPU node pool."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from infra_tools import REPO, resources, run_tool, tool

INFRA = REPO / "infra"
# What `slmforge promote` / `rollback` need: read versions, runs and their metadata (get, list); move
# aliases (models.update, the one write).
PROMOTER_READS = {
    "models": ("get", "list"),
    "pipelineJobs": ("get", "list"),
    "metadataStores": ("get",),
    "artifacts": ("get", "list"),
    "executions": ("get", "list"),
}
PROMOTER_ALLOWED = {f"aiplatform.{c}.{verb}" for c, verbs in PROMOTER_READS.items() for verb in verbs}
PROMOTER_ALLOWED.add("aiplatform.models.update")
# A for_each over a local table: `local.NAME`, or the rows of it a condition keeps.
TABLE = re.compile(r"\$\{(?:local\.(\w+)|\{for (\w+), (\w+) in local\.(\w+) : \2 => \3 if [^}]+\})\}")


def table_locals(terraform: dict[str, dict]) -> dict:
    return {k: v for doc in terraform.values() for block in doc.get("locals", []) for k, v in block.items()}


def row_refs(prefix: str, row) -> dict[str, object]:
    """The names a row answers to: PREFIX, and PREFIX.ATTR for each of its attributes."""
    attrs = row.items() if isinstance(row, dict) else ()
    return {prefix: row, **{f"{prefix}.{a}": v for a, v in attrs}}


def substitute(value, refs: dict[str, object], tables: dict):
    """value with the names in refs replaced as Terraform evaluates them: a whole "${NAME}" by the value
    itself (a "${local.X.Y}" there by that local's value), NAME inside a longer expression by its HCL
    literal; dynamic blocks expanded into the plain blocks they make."""
    if isinstance(value, str):
        whole = re.fullmatch(r"\$\{([\w.]+?)(\[\*\])?\}", value)
        if whole and whole.group(1) in refs:
            found = refs[whole.group(1)]
            local = re.fullmatch(r"\$\{local\.(\w+)\.(\w+)\}", str(found))
            found = tables[local.group(1)][local.group(2)] if local else found
            return ([] if found is None else [found]) if whole.group(2) else found
        for name in sorted(refs, key=len, reverse=True):
            literal = json.dumps(refs[name])
            value = re.sub(rf"\b{re.escape(name)}\b(?![.\w])", lambda _, s=literal: s, value)
        return value
    if isinstance(value, list):
        return [substitute(v, refs, tables) for v in value]
    if not isinstance(value, dict):
        return value
    body = {k: substitute(v, refs, tables) for k, v in value.items() if k != "dynamic"}
    for block in value.get("dynamic", []):
        for label, spec in block.items():
            items = substitute(spec["for_each"], refs, tables)
            content = spec["content"][0]
            body[label] = [substitute(content, row_refs(f"{label}.value", i), tables) for i in items]
    return body


def instances(terraform: dict[str, dict]) -> dict[tuple[str, str], dict]:
    """resources(), with every for_each over a local table expanded into its instances: {(type,
    'name["key"]'): body as Terraform makes it for that row} (the for_each itself kept in each)."""
    tables = table_locals(terraform)
    found = {}
    for (rtype, name), body in resources(terraform).items():
        m = TABLE.fullmatch(str(body.get("for_each", "")))
        if not m:
            found[(rtype, name)] = body
            continue
        for key, row in tables[m.group(1) or m.group(4)].items():
            refs = {"each.key": key, **row_refs("each.value", row)}
            found[(rtype, f'{name}["{key}"]')] = {
                **substitute(body, refs, tables),
                "for_each": body["for_each"],
            }
    return found


def bindings_of(res: dict, account: str) -> list[dict]:
    """Every IAM member or binding whose member is the slmforge service account `account`."""
    member = f'google_service_account.slmforge["{account}"].member'
    return [
        body
        for (rtype, _), body in res.items()
        if rtype.endswith(("_iam_member", "_iam_binding")) and member in str(body.get("member", ""))
    ]


def test_every_tf_file_parses(terraform):
    files = sorted(p.name for p in INFRA.glob("*.tf"))
    assert files and sorted(terraform) == files
    assert all(terraform[f] for f in files), "an empty document"


def test_checkov_passes():
    out = run_tool(
        [
            tool("checkov", "checkov"),
            "--quiet",
            "--compact",
            "--skip-download",
            "--framework",
            "terraform",
            "-d",
            INFRA,
        ]
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert re.search(r"Passed checks: [1-9]\d*, Failed checks: 0", out.stdout), out.stdout[-2000:]


def test_checkov_skips_are_justified():
    for path in INFRA.glob("*.tf"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if "checkov:skip" in line:
                m = re.search(r"#checkov:skip=(CKV2?_[A-Z]+_\d+):(.+)$", line)
                assert m and len(m.group(2).strip()) >= 40, f"{path.name}: skip without a reason: {line}"


def test_wif_provider_accepts_one_repository_and_ref(terraform):
    provider = resources(terraform)[("google_iam_workload_identity_pool_provider", "github")]
    assert provider["oidc"][0]["issuer_uri"] == "https://token.actions.githubusercontent.com"
    condition = provider["attribute_condition"]
    clauses = [c.strip() for c in condition.split("&&")]
    assert "assertion.repository == '${var.github_repository}'" in clauses, condition
    assert "assertion.ref == '${var.github_ref}'" in clauses, condition
    assert "||" not in " ".join(c for c in clauses if not c.startswith("(")), (
        "an OR outside the subject clause"
    )
    assert provider["attribute_mapping"]["google.subject"] == "assertion.sub"


def test_promoter_can_only_read_and_move_aliases(terraform):
    res = instances(terraform)
    role = res[("google_project_iam_custom_role", "promoter")]
    perms = set(role["permissions"])
    assert "aiplatform.models.update" in perms and perms <= PROMOTER_ALLOWED, perms - PROMOTER_ALLOWED
    bindings = {body["role"]: body for body in bindings_of(res, "promoter")}
    # on the project: the custom role only; in the bucket: reads under the registry's staging prefix and
    # writes to its audit logs, each held to those objects by a condition
    assert set(bindings) == {
        "${google_project_iam_custom_role.promoter.id}",
        "roles/storage.objectViewer",
        "roles/storage.objectUser",
    }
    staging = 'resource.name.startsWith(\\"${local.staging_objects}\\")'
    assert bindings["roles/storage.objectViewer"]["condition"][0]["expression"] == staging
    writes = bindings["roles/storage.objectUser"]["condition"][0]["expression"]
    assert writes == staging + ' && resource.name.endsWith(\\"/audit.jsonl\\")'
    # and only jobs in the protected environment may act as it
    wif = res[("google_service_account_iam_member", "promoter_wif")]
    assert wif["role"] == "roles/iam.workloadIdentityUser"
    assert wif["member"].endswith("/subject/${local.github_subject_environment}")
    subject = terraform["wif.tf"]["locals"][0]["github_subject_environment"]
    assert subject.endswith(":environment:${var.github_environment}")


def test_deployer_writes_only_staged_data_and_deployment_records_in_the_bucket(terraform):
    res = instances(terraform)
    bucket_roles = {
        (b["role"], b["condition"][0]["expression"])
        for b in bindings_of(res, "deployer")
        if "bucket" in b and "repository" not in b
    }

    def under(prefix: str) -> str:
        return f'resource.name.startsWith(\\"{prefix}\\")'

    staged = under("${local.staged_data_objects}")
    assert bucket_roles == {
        ("roles/storage.objectViewer", staged),
        ("roles/storage.objectCreator", staged),
        ("roles/storage.objectUser", under("${local.deployment_objects}")),  # deploy.state
        ("roles/storage.objectViewer", under("${local.staging_objects}")),  # version tags
        ("roles/storage.objectViewer", under("${local.bucket_objects}/${local.pipeline_root_prefix}/")),
    }


def test_deployed_models_run_as_the_serving_account_which_reads_weights_only(terraform):
    res = instances(terraform)
    serving = bindings_of(res, "serving")
    assert [(b["role"], b["condition"][0]["title"]) for b in serving] == [
        ("roles/storage.objectViewer", "registry staging only")
    ]
    # who deploys (`slmforge deploy` as the deployer, the pipeline's deploy step as the pipeline account)
    # may act as the serving account, and nobody else
    acts = {
        key: body
        for key, body in res.items()
        if key[0] == "google_service_account_iam_member" and "serving" in str(body["service_account_id"])
    }
    assert sorted(body["member"] for body in acts.values()) == [
        '${google_service_account.slmforge["deployer"].member}',
        '${google_service_account.slmforge["pipeline"].member}',
    ]
    for body in acts.values():
        assert body["role"] == "roles/iam.serviceAccountUser"
        assert body["service_account_id"] == '${google_service_account.slmforge["serving"].name}'


def test_no_keys_no_basic_roles_and_bindings_are_scoped(terraform):
    res = instances(terraform)
    assert not [k for k in res if k[0] == "google_service_account_key"]
    roles = [str(body.get("role", "")) for body in res.values()]
    assert not {"roles/owner", "roles/editor", "roles/viewer"} & set(roles)
    # the CI account acts as the pipeline account only, not as every account of the project
    assert not [
        k for k, b in res.items() if k[0] == "google_project_iam_member" and "serviceAccountUser" in b["role"]
    ]
    # nobody but the node pools' own account gets project-wide roles beyond Vertex and logs
    project_roles = {b["role"] for k, b in res.items() if k[0] == "google_project_iam_member"}
    assert project_roles <= {
        "roles/aiplatform.user",
        "roles/logging.logWriter",
        "roles/monitoring.metricWriter",
        "roles/monitoring.viewer",
        "roles/stackdriver.resourceMetadata.writer",
        "${google_project_iam_custom_role.promoter.id}",
        "${each.value}",
    }, project_roles


def test_bucket_and_repositories(terraform):
    res = resources(terraform)
    bucket = res[("google_storage_bucket", "pipelines")]
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert res[("google_artifact_registry_repository", "images")]["format"] == "DOCKER"
    assert res[("google_artifact_registry_repository", "templates")]["format"] == "KFP"
    text = (INFRA / "main.tf").read_text(encoding="utf-8")
    apis = set(re.findall(r'"([a-z]+\.googleapis\.com)"', text))
    assert {
        "aiplatform.googleapis.com",
        "artifactregistry.googleapis.com",
        "sts.googleapis.com",
        "iamcredentials.googleapis.com",
        "container.googleapis.com",
    } <= apis


def test_gpu_node_pool_is_tainted_labelled_and_scales_to_zero(terraform):
    pool = instances(terraform)[("google_container_node_pool", 'kfp["gpu"]')]
    node = pool["node_config"][0]
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"} in node["taint"]
    assert node["labels"] == {"slmforge/pool": "gpu"}
    assert node["guest_accelerator"][0]["type"] == "${var.gpu_accelerator_type}"
    assert pool["autoscaling"][0]["min_node_count"] == 0
    assert pool["for_each"].endswith(" if var.create_gke_cluster}}"), pool["for_each"]  # optional
    assert node["workload_metadata_config"][0]["mode"] == "GKE_METADATA"


def test_moved_blocks_carry_old_state_to_instances_that_exist(terraform):
    """moved.tf: every old address is gone from the configuration, and its new one is an instance that
    the for_each tables make, of the same resource type."""
    res = instances(terraform)
    moves = [(m["from"].strip("${}"), m["to"].strip("${}")) for m in terraform["moved.tf"]["moved"]]
    assert moves
    for old, new in moves:
        rtype, _, name = re.sub(r"\[0\]$", "", old).partition(".")
        assert (rtype, name) not in res, f"{old} is still declared"
        new_type, _, new_name = new.partition(".")
        assert new_type == rtype and (rtype, new_name) in res, f"{new}: no such instance"


@pytest.mark.parametrize(
    "name",
    [
        "GCP_WORKLOAD_IDENTITY_PROVIDER",
        "GCP_DEPLOYER_SERVICE_ACCOUNT",
        "GCP_PROMOTER_SERVICE_ACCOUNT",
        "GCP_IMAGE_REPO",
        "GCP_TEMPLATE_REPO",
    ],
)
def test_every_variable_the_workflows_read_is_an_output(terraform, name):
    workflows = "".join(p.read_text(encoding="utf-8") for p in (REPO / ".github" / "workflows").glob("*.yml"))
    assert f"vars.{name}" in workflows
    outputs = [body for block in terraform["outputs.tf"]["output"] for body in block.values()]
    assert any(name in o["description"] for o in outputs), f"no output says it is {name}"


def test_self_hosted_kfp_runs_as_the_pipeline_account_through_workload_identity(terraform):
    """With create_gke_cluster, the Kubernetes service account of every run (kubeflow/pipeline-runner)
    may act as the pipeline account, and nothing else may by that route; infra/kfp/ annotates it."""
    res = instances(terraform)
    wi = res[("google_service_account_iam_member", "pipeline_workload_identity")]
    assert wi["count"] == "${var.create_gke_cluster ? 1 : 0}"
    assert wi["role"] == "roles/iam.workloadIdentityUser"
    assert wi["member"] == "serviceAccount:${var.project_id}.svc.id.goog[kubeflow/pipeline-runner]"
    assert wi["service_account_id"] == '${google_service_account.slmforge["pipeline"].name}'
    kustomization = yaml.safe_load((INFRA / "kfp" / "kustomization.yaml").read_text(encoding="utf-8"))
    (target,) = kustomization["replacements"][0]["targets"]
    assert target["select"] == {"kind": "ServiceAccount", "name": "pipeline-runner"}
    assert target["fieldPaths"] == ["metadata.annotations.[iam.gke.io/gcp-service-account]"]
    assert kustomization["namespace"] == "kubeflow"


def test_the_kfp_install_is_pinned_to_the_backend_of_the_locked_sdk(terraform):
    """One KFP release everywhere: the overlay's upstream ref, the cluster-scoped resources in the install
    commands, and the kfp SDK version in requirements.lock (same major.minor)."""
    kustomization = yaml.safe_load((INFRA / "kfp" / "kustomization.yaml").read_text(encoding="utf-8"))
    (upstream,) = kustomization["resources"]
    ref = upstream.split("?ref=")[1]
    outputs = {name: body for block in terraform["outputs.tf"]["output"] for name, body in block.items()}
    install = str(outputs["kfp_install"]["value"])
    assert f"cluster-scoped-resources?ref={ref}'" in install and "kubectl apply -k kfp/" in install
    assert "kfp_params_env > kfp/params.env" in install
    sdk = re.search(r"^kfp==(\d+\.\d+)\.", (REPO / "requirements.lock").read_text(), re.M).group(1)
    assert ref.rsplit(".", 1)[0] == sdk, (ref, sdk)
    params = str(outputs["kfp_params_env"]["value"])
    assert (
        "defaultPipelineRoot=${google_storage_bucket.pipelines.url}/${local.pipeline_root_prefix}" in params
    )
    assert "kfp/params.env" in (REPO / ".gitignore").read_text()
    assert "--kfp-host http://localhost:8080" in str(outputs["kfp_api"]["value"])
