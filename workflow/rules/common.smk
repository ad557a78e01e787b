# Input functions, wildcard constraints and the pre-flight check shared by every rule.
from mtcxr.preflight import clear_running, mark_running, preflight, stop_on_input_error

# Backbones and the dataset as a whole are checked before any job starts; what ingest reads
# is its input, so that a changed manifest, image, CSV or reports zip reruns it.
with stop_on_input_error():
    INGEST_INPUTS = preflight(config)

RESULTS = config["results"]
SHARDS = list(range(config["images"]["shards"]))
BACKBONES = list(config["backbones"])
VARIANTS = list(config["variants"])
XTRA_VARIANTS = list(config["xtra"]["variants"])
GENERATION = config["generation"]["enabled"]
# Training seeds: each trained variant once per seed; an untrained variant (zeroshot) runs once, at
# the first seed. X-TRA, report generation and the t-SNE figure use the first seed's heads.
SEEDS = [int(seed) for seed in config["train"]["seeds"]]
PRIMARY_SEED = SEEDS[0]
CXR_CLIP_IMAGES = config["evaluate"]["cxr_clip_images"]
if CXR_CLIP_IMAGES == "auto":  # CXR-CLIP's Open-I test set takes every frontal image; MIMIC-CXR one per study
    CXR_CLIP_IMAGES = "every_frontal" if config["dataset"]["kind"] == "iu_xray" else "first_frontal"
DEMO_DIR = f"{RESULTS}/models/demo_backbone"
ENV = "../envs/mtcxr.yaml"


wildcard_constraints:
    backbone="|".join(BACKBONES) or "none",
    variant="|".join(VARIANTS) or "none",
    shard=r"\d+",
    seed=r"\d+",
    split="train|validate|test",


def backbone_spec(wildcards):
    return config["backbones"][wildcards.backbone]


def demo_dir_param(wildcards):
    """The demo backbone's folder when this backbone is `demo`, else None."""
    return DEMO_DIR if backbone_spec(wildcards) == "demo" else None


def demo_dir_input(wildcards):
    """Make the demo backbone an input only of the jobs that load it."""
    return [DEMO_DIR] if backbone_spec(wildcards) == "demo" else []


def is_trained(variant):
    return config["variants"][variant].get("train", True)


def variant_seeds(variant):
    """The training seeds a variant runs with: every seed when it trains, else the first."""
    return SEEDS if is_trained(variant) else [PRIMARY_SEED]


def run_paths(pattern, backbones=None):
    """`pattern` ({backbone}, {variant}, {seed}) for every backbone x variant x its seeds."""
    return [pattern.format(backbone=backbone, variant=variant, seed=seed) for backbone in (backbones or BACKBONES)
            for variant in VARIANTS for seed in variant_seeds(variant)]


def primary_head(name):
    """A file of the first seed's heads of {backbone}/{variant}: what X-TRA and generation build on."""
    return f"{RESULTS}/models/{{backbone}}/{{variant}}/seed{PRIMARY_SEED}/{name}"


def image_embeddings(wildcards):
    return expand(f"{RESULTS}/embeddings/{wildcards.backbone}/images-{{shard}}.parquet", shard=SHARDS)


def all_reject_tables(wildcards):
    generation = [f"{RESULTS}/generation/rejects.parquet"] if GENERATION else []
    return ([f"{RESULTS}/data/rejects.parquet"] + expand(f"{RESULTS}/data/pixels/rejects-{{shard}}.parquet", shard=SHARDS)
            + generation)


def pixel_reject_tables(wildcards):
    """The images preprocess_images rejected: generation never queries with one of them."""
    return expand(f"{RESULTS}/data/pixels/rejects-{{shard}}.parquet", shard=SHARDS)


def generation_tables(wildcards):
    """Every generation method's reports: the baselines, retrieval per backbone x variant, X-TRA per memory."""
    return ([f"{RESULTS}/generation/baselines.parquet"]
            + expand(f"{RESULTS}/generation/{{backbone}}/{{variant}}/retrieval.parquet", backbone=BACKBONES, variant=VARIANTS)
            + expand(f"{RESULTS}/generation/{{backbone}}/{{variant}}/xtra.parquet", backbone=BACKBONES, variant=XTRA_VARIANTS))


def generation_summary_inputs(wildcards):
    """The generation metrics and per-study scores `summarize` reads, when generation is on."""
    if not GENERATION:
        return {}
    return {"generation": f"{RESULTS}/metrics/generation.parquet",
            "generation_studies": f"{RESULTS}/metrics/generation_per_study.parquet"}


def index_dirs(wildcards):
    """Variants shown side by side in the t-SNE figure (first seed): zeroshot and multitask when configured."""
    shown = [v for v in ("zeroshot", "multitask") if v in VARIANTS] or VARIANTS[:2]
    return {b: {v: f"{RESULTS}/index/{b}/{v}/seed{PRIMARY_SEED}" for v in shown} for b in BACKBONES}


def index_folders(wildcards):
    return [folder for variants in index_dirs(wildcards).values() for folder in variants.values()]


def ingest_inputs(wildcards):
    return INGEST_INPUTS


def metric_tables(wildcards):
    """Every backbone x variant x seed metrics table: the inputs of the `evaluate` target."""
    return run_paths(f"{RESULTS}/metrics/{{backbone}}/{{variant}}/seed{{seed}}.parquet")


def trained_history_map(wildcards):
    """"variant/seedN" -> history.parquet of every run of this backbone that trains (not `zeroshot`)."""
    return {f"{v}/seed{s}": f"{RESULTS}/models/{wildcards.backbone}/{v}/seed{s}/history.parquet"
            for v in VARIANTS if is_trained(v) for s in SEEDS}


def trained_histories(wildcards):
    return list(trained_history_map(wildcards).values())


def xtra_model_dir(wildcards):
    return f"{RESULTS}/xtra/{wildcards.backbone}/{wildcards.variant}/model"


def xtra_model_files(wildcards):
    """The X-TRA classifier and its query-only baseline (weights, configs) and their training history."""
    folder = xtra_model_dir(wildcards)
    names = ["xtra.safetensors", "xtra.json", "query_only.safetensors", "query_only.json", "history.parquet"]
    return [f"{folder}/{name}" for name in names]


def xtra_tables(suffix):
    """Input function: the X-TRA metrics tables (`parquet`, `paired.parquet`) of every backbone x X-TRA variant."""

    def tables(wildcards):
        return expand(f"{RESULTS}/metrics/xtra/{{backbone}}/{{variant}}.{suffix}", backbone=BACKBONES,
                      variant=XTRA_VARIANTS)

    return tables


def final_outputs():
    xtra = [f"{RESULTS}/figures/xtra_auc.png"] if XTRA_VARIANTS else []
    xtra += [f"{RESULTS}/figures/generation.png", f"{RESULTS}/metrics/generation.csv"] if GENERATION else []
    return [
        f"{RESULTS}/metrics/summary.csv",
        f"{RESULTS}/metrics/summary.md",
        f"{RESULTS}/metrics/finding_precision.csv",
        f"{RESULTS}/labels/agreement.parquet",
        f"{RESULTS}/figures/recall_at_k.png",
    ] + expand(f"{RESULTS}/figures/{{name}}_{{backbone}}.png", name=["tsne", "training", "finding_precision"],
               backbone=BACKBONES) + xtra


def variant_config(wildcards):
    return config["variants"][wildcards.variant]
