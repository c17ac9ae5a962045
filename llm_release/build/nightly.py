"""The nightly build plan: which engines need building tonight, under which version.

A nightly run names models (each with its checkpoint) and a build matrix (precision x tensor
parallelism). Every (model, variant) pair becomes one engine line, published under its own
model name when the matrix has more than one variant (`<model>_<precision>_tp<N>`), so each
line has its own versions, canary and rollback. For each line the plan reads the artifact
store once and compares tonight's build inputs (checkpoint digest, build parameters, builder,
image) with the newest published version's metadata: equal inputs mean the engine would be the
same, so nothing is built; anything else is built as the next version.

Everything here is validated before anything is built, with errors naming the field
(`models[1].checkpoint`, `matrix.tp_sizes[0]`), because the spec comes from a trigger form.
No Airflow imports: the DAG's plan task calls `plan_builds` and maps over what it returns.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from llm_release.build.backends import BUILDERS, get_builder
from llm_release.engine.params import BuildParams
from llm_release.errors import SpecError
from llm_release.metadata import MODEL_NAME, check_model_name

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./=+@:-]*$")
#: The build limits a nightly spec may set for every variant (the matrix sets the rest).
LIMIT_FIELDS = ("max_batch_size", "max_input_len", "max_seq_len", "max_num_tokens", "kv_cache_type",
                "kv_cache_dtype", "pp_size")


@dataclass(frozen=True)
class NightlyModel:
    """One model line of the nightly: its checkpoint and, for TensorRT-LLM, its family."""

    model: str
    checkpoint: str
    model_family: str | None = None
    checkpoint_digest: str | None = None  # given when the checkpoint is not readable here (a PVC)


@dataclass(frozen=True)
class NightlySpec:
    """What a nightly run builds: models x precisions x tp sizes, with shared limits."""

    models: tuple[NightlyModel, ...]
    precisions: tuple[str, ...]
    tp_sizes: tuple[int, ...]
    limits: dict
    builder: str = "reference"
    work_dir: str = "/tmp/llm-release-builds"
    image: str | None = None
    force: bool = False

    @classmethod
    def from_dict(cls, doc: Any) -> "NightlySpec":
        if not isinstance(doc, Mapping):
            raise SpecError("nightly", f"expected a mapping, got {type(doc).__name__}", "give the nightly spec as JSON")
        known = {"models", "precisions", "tp_sizes", "limits", "builder", "work_dir", "image", "force"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise SpecError(unknown[0], "is not a nightly build setting", f"use {', '.join(sorted(known))}")
        builder = doc.get("builder") or "reference"
        if builder not in BUILDERS:
            raise SpecError("builder", f"{builder!r} is not a builder", f"use one of {', '.join(BUILDERS)}")
        models = _models(doc.get("models"), builder)
        precisions = _list_of("precisions", doc.get("precisions") or ["fp32"], str)
        tp_sizes = _list_of("tp_sizes", doc.get("tp_sizes") or [1], int)
        limits = doc.get("limits") or {}
        if not isinstance(limits, Mapping):
            raise SpecError("limits", "must be a mapping of build limits", f"use keys among {', '.join(LIMIT_FIELDS)}")
        bad = sorted(set(limits) - set(LIMIT_FIELDS))
        if bad:
            raise SpecError(f"limits.{bad[0]}", "is not a shared build limit",
                            f"use {', '.join(LIMIT_FIELDS)}; precision and tp come from the matrix")
        work_dir = doc.get("work_dir") or cls.work_dir
        if not isinstance(work_dir, str) or not work_dir.startswith("/") or "\0" in work_dir or "\n" in work_dir:
            raise SpecError("work_dir", f"{work_dir!r} is not an absolute path", "give an absolute directory")
        image = doc.get("image")
        if image is not None and (not isinstance(image, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_./:@-]*", image)):
            raise SpecError("image", f"{image!r} is not an image reference", "use registry/repo:tag or repo@sha256:...")
        force = doc.get("force", False)
        if not isinstance(force, bool):
            raise SpecError("force", f"{force!r} is not true or false", "use true to rebuild unchanged engines")
        spec = cls(models=models, precisions=precisions, tp_sizes=tp_sizes, limits=dict(limits), builder=builder,
                   work_dir=work_dir, image=image, force=force)
        spec.variants()  # every variant validated now, before anything is built
        return spec

    def variants(self) -> list[tuple[NightlyModel, str, BuildParams]]:
        """(model entry, published model name, build params) for every model x precision x tp."""
        builder = get_builder(self.builder)
        single = len(self.precisions) * len(self.tp_sizes) == 1
        out = []
        for i, entry in enumerate(self.models):
            for precision in self.precisions:
                for tp in self.tp_sizes:
                    try:
                        params = BuildParams.from_dict({**self.limits, "precision": precision, "tp_size": tp})
                        builder.check(params)
                    except SpecError as exc:
                        field_name = {"precision": "precisions", "tp_size": "tp_sizes"}.get(exc.field, f"limits.{exc.field}")
                        raise SpecError(field_name, f"{entry.model} {precision} tp{tp}: {exc.problem}", exc.fix) from exc
                    name = entry.model if single else f"{entry.model}_{precision}_tp{tp}"
                    if not MODEL_NAME.fullmatch(name):
                        raise SpecError(f"models[{i}].model", f"the variant name {name!r} is too long", "shorten the model name")
                    out.append((entry, name, params))
        names = [name for _, name, _ in out]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SpecError("models", f"{dupes[0]} appears twice", "list each model once")
        return out


@dataclass
class PlannedBuild:
    """One engine line tonight: build it as `version`, or skip it and say why."""

    model: str  # the published model name
    source_model: str
    version: int
    builder: str
    build_params: dict
    checkpoint: str
    checkpoint_digest: str | None
    engine_dir: str
    model_family: str | None = None
    image: str | None = None
    action: str = "build"  # "build" | "skip"
    reason: str = ""
    inputs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def build_inputs(*, checkpoint_digest: str | None, params: BuildParams, builder: str, image: str | None) -> dict:
    """What decides an engine's bytes (besides the toolchain's nondeterminism): compared with the
    newest published version's metadata to skip unchanged builds."""
    return {"checkpoint_digest": checkpoint_digest, "build_params": _normal(params.to_dict()),
            "builder": get_builder(builder).metadata_name, "image": image}


def inputs_of(meta) -> dict:
    """The same inputs, read back from a published engine's metadata."""
    try:
        params = _normal(BuildParams.from_dict(meta.build_params).to_dict())
    except SpecError:
        params = meta.build_params  # built by another release of this system: never equal
    return {"checkpoint_digest": meta.source_checkpoint_digest, "build_params": params, "builder": meta.builder,
            "image": meta.triton_image}


def inputs_digest(inputs: dict) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def plan_builds(spec: NightlySpec, store, *, digest_of: Callable[[str], str] | None = None, log=None) -> list[PlannedBuild]:
    """Tonight's plan, from ONE listing of the store plus one manifest read per published line.

    `digest_of(checkpoint)` computes a checkpoint's digest where it is readable (the reference
    checkpoint digest by default); a model entry may give `checkpoint_digest` instead. Without
    a digest the inputs cannot be compared, so the line is built (and the plan says why).
    """
    from llm_release.artifacts.manifest import Manifest
    from llm_release.engine.checkpoint import checkpoint_digest as reference_digest

    digest_of = digest_of or reference_digest
    listing = store.list_published()
    newest: dict[str, int] = {}
    for model, version in listing.versions:
        newest[model] = max(version, newest.get(model, 0))
    plans = []
    digests: dict[str, str | None] = {}
    for entry, name, params in spec.variants():
        if entry.checkpoint not in digests:
            digests[entry.checkpoint] = entry.checkpoint_digest or _readable_digest(entry.checkpoint, digest_of)
        digest = digests[entry.checkpoint]
        inputs = build_inputs(checkpoint_digest=digest, params=params, builder=spec.builder, image=spec.image)
        last = newest.get(name)
        plan = PlannedBuild(model=name, source_model=entry.model, version=(last or 0) + 1, builder=spec.builder,
                            build_params=params.to_dict(), checkpoint=entry.checkpoint, checkpoint_digest=digest,
                            engine_dir="", model_family=entry.model_family, image=spec.image, inputs=inputs)
        if last is None:
            plan.reason = f"{name} has no published version yet"
        else:
            data = store.fetch_manifest(name, last)
            published = inputs_of(Manifest.from_bytes(data, where=f"{store.describe()}/{name}/{last}").metadata) if data else None
            if digest is None:
                plan.reason = f"the checkpoint digest of {entry.checkpoint} is unknown (not readable here): building"
            elif published == inputs and not spec.force:
                plan.action, plan.version = "skip", last
                plan.reason = f"inputs match the published v{last} ({inputs_digest(inputs)[:19]}...): nothing to build"
            elif published == inputs:
                plan.reason = f"inputs match v{last}, but force is set: building v{last + 1}"
            else:
                changed = sorted(k for k in inputs if not published or published.get(k) != inputs[k])
                plan.reason = f"{', '.join(changed)} changed since v{last}"
        plan.engine_dir = str(Path(spec.work_dir) / "engines" / name / str(plan.version))
        if log:
            log.info("%s: %s v%d (%s)", name, plan.action, plan.version, plan.reason)
        plans.append(plan)
    return plans


def _readable_digest(checkpoint: str, digest_of: Callable[[str], str]) -> str | None:
    if not Path(checkpoint).is_dir():
        return None
    digest = digest_of(checkpoint)
    if not _DIGEST.fullmatch(digest or ""):
        raise SpecError("checkpoint_digest", f"{digest!r} is not sha256:<64 hex>", "check the checkpoint reader")
    return digest


def _normal(params: dict) -> dict:
    """Build params without unset optional fields, so a default spelled out equals one left out."""
    return {k: v for k, v in sorted(params.items()) if v is not None}


def _models(raw: Any, builder: str) -> tuple[NightlyModel, ...]:
    if not isinstance(raw, list) or not raw:
        raise SpecError("models", "must be a non-empty list of {model, checkpoint}",
                        'e.g. [{"model": "reference_lm", "checkpoint": "/checkpoints/reference_lm"}]')
    out = []
    for i, item in enumerate(raw):
        where = f"models[{i}]"
        if not isinstance(item, Mapping):
            raise SpecError(where, f"{item!r} is not a mapping", "give {model, checkpoint}")
        unknown = sorted(set(item) - {"model", "checkpoint", "model_family", "checkpoint_digest"})
        if unknown:
            raise SpecError(f"{where}.{unknown[0]}", "is not a model setting",
                            "use model, checkpoint, model_family, checkpoint_digest")
        try:
            model = check_model_name(item.get("model"))
        except SpecError as exc:
            raise SpecError(f"{where}.model", exc.problem, exc.fix) from exc
        checkpoint = item.get("checkpoint")
        if not isinstance(checkpoint, str) or not _SAFE_PATH.fullmatch(checkpoint) or ".." in checkpoint.split("/"):
            raise SpecError(f"{where}.checkpoint", f"{checkpoint!r} is not a plain absolute path",
                            "use an absolute path of letters, digits and _ . / = + @ : -")
        family = item.get("model_family")
        if get_builder(builder).needs_family and not family:
            raise SpecError(f"{where}.model_family", f"is required by the {builder} builder",
                            "name the checkpoint's family, e.g. llama")
        if family is not None and (not isinstance(family, str) or not re.fullmatch(r"[a-z0-9_]{1,40}", family)):
            raise SpecError(f"{where}.model_family", f"{family!r} is not a model family name", "e.g. llama")
        digest = item.get("checkpoint_digest")
        if digest is not None and (not isinstance(digest, str) or not _DIGEST.fullmatch(digest)):
            raise SpecError(f"{where}.checkpoint_digest", f"{digest!r} is not sha256:<64 hex>", "or leave it out")
        out.append(NightlyModel(model, checkpoint, family, digest))
    return tuple(out)


def _list_of(name: str, raw: Any, kind: type) -> tuple:
    if not isinstance(raw, list) or not raw:
        raise SpecError(name, f"{raw!r} is not a non-empty list", f"give a list of {kind.__name__}")
    for i, value in enumerate(raw):
        if not isinstance(value, kind) or isinstance(value, bool):
            raise SpecError(f"{name}[{i}]", f"{value!r} is not a {kind.__name__}", f"give a list of {kind.__name__}")
    if len(set(raw)) != len(raw):
        raise SpecError(name, f"{raw!r} lists a value twice", "list each value once")
    return tuple(raw)


def releases_from_events(extras: list[dict], environment: str) -> list[dict]:
    """Release configs (the `release` DAG's params) for published engines, one per model and
    version, from the extras of the asset events the nightly's publish task emitted. Events
    without a model and version (written by something else) are skipped."""
    out, seen = [], set()
    for extra in extras:
        model, version = (extra or {}).get("model"), (extra or {}).get("version")
        if not isinstance(model, str) or isinstance(version, bool) or not isinstance(version, int):
            continue
        if (model, version) in seen:
            continue
        seen.add((model, version))
        config = {"model": model, "version": version, "environment": environment}
        if extra.get("manifest_digest"):
            config["artifact_digest"] = extra["manifest_digest"]
        out.append(config)
    return out
