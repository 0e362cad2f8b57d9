"""What the accelerators hold and cost: GPU memory, peak bf16 throughput, machine types and USD per hour.

Every number below says where it comes from. Where no source was found, the value is ``None`` and the
preflight report says so: it never guesses a price.

Prices (us-central1, on-demand, USD per hour; sources looked up on 2026-11-21):

* Vertex AI custom training bills a machine type (vCPU + RAM) plus each accelerator, at rates listed on
  https://cloud.google.com/vertex-ai/pricing. The one accelerator rate found as text is
  NVIDIA_H100_80GB at $9.79655057/h (and n1-standard-4 at $0.21849885/h), from a transcription of that
  page read on 2026-10-07 (https://github.com/api-evangelist/google-vertex-ai,
  plans/google-vertex-ai-plans-pricing.yml; the transcription does not name the region). The machine
  part of the A2/A3/G2 types was not found, so no full Vertex rate is known for any machine below:
  ``vertex_usd_per_hour`` is None throughout.
* What is known is the Compute Engine on-demand list price of the same machine type (GPUs, vCPUs and
  RAM, bundled local SSD included), from the Cloud Billing catalog as exported by
  https://github.com/Cyclenerd/google-cloud-pricing-cost-calculator (pricing.yml at commit 082120d2,
  generated 2024-11-07), and one row from https://github.com/tgarg01/silybench-data
  (derived/csv/gpu_prices.csv, checked 2026-09-26). Vertex AI adds a management premium on top of
  Compute Engine, so a Compute Engine price is a LOWER BOUND of the Vertex bill; the report labels it.
* Not found: a3-ultragpu-8g (8 x H200; absent from the 2024-11 export), a3-megagpu-8g in us-central1,
  g2-standard-96, a2-highgpu-4g, a2-ultragpu-4g/8g. Pass ``usd_per_hour`` to preflight to price them.

Throughput: peak dense bf16 tensor TFLOP/s from NVIDIA's data sheets (the sheets quote 2x that "with
sparsity"): L4 121, A100 312, H100 SXM 989, H200 989 (https://www.nvidia.com/en-us/data-center/l4/,
.../a100/, .../h100/, .../h200/; from the sheets as published, not re-read in this session). The
share of that peak a fine-tune reaches is an ASSUMPTION (``ASSUMED_MFU``), not a measurement: replace
it with a measured tokens/s (``PreflightOptions.tokens_per_s``) once a benchmark exists.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Accelerator:
    name: str  # Vertex accelerator type, e.g. NVIDIA_L4
    memory_gib: float  # device total as PyTorch reports it (GiB, 2**30 bytes), below the marketed GB
    bf16_tflops: float  # peak dense bf16 tensor TFLOP/s (data sheet, without sparsity)
    # accelerator count -> Vertex / Compute Engine machine type that carries that many of them
    machine_types: dict[int, str]
    gke_name: str  # the same GPU as GKE names it: the node label cloud.google.com/gke-accelerator


# Memory in GiB: what torch.cuda.get_device_properties().total_memory reports, approximately (the
# marketed "24 GB" of an L4 is 10**9-byte GB and includes memory the driver keeps).
ACCELERATORS: dict[str, Accelerator] = {
    a.name: a
    for a in (
        Accelerator(
            "NVIDIA_L4",
            22.0,
            121.0,
            {1: "g2-standard-8", 2: "g2-standard-24", 4: "g2-standard-48", 8: "g2-standard-96"},
            "nvidia-l4",
        ),
        Accelerator(
            "NVIDIA_TESLA_A100",
            39.4,
            312.0,
            {
                1: "a2-highgpu-1g",
                2: "a2-highgpu-2g",
                4: "a2-highgpu-4g",
                8: "a2-highgpu-8g",
                16: "a2-megagpu-16g",
            },
            "nvidia-tesla-a100",
        ),
        Accelerator(
            "NVIDIA_A100_80GB",
            79.1,
            312.0,
            {1: "a2-ultragpu-1g", 2: "a2-ultragpu-2g", 4: "a2-ultragpu-4g", 8: "a2-ultragpu-8g"},
            "nvidia-a100-80gb",
        ),
        # a3-highgpu-1g/2g/4g are Spot / flex-start (DWS) shapes; only 8g is on-demand.
        Accelerator(
            "NVIDIA_H100_80GB",
            79.1,
            989.0,
            {1: "a3-highgpu-1g", 2: "a3-highgpu-2g", 4: "a3-highgpu-4g", 8: "a3-highgpu-8g"},
            "nvidia-h100-80gb",
        ),
        Accelerator("NVIDIA_H100_MEGA_80GB", 79.1, 989.0, {8: "a3-megagpu-8g"}, "nvidia-h100-mega-80gb"),
        # 8 x H200 is the only shape
        Accelerator("NVIDIA_H200_141GB", 139.8, 989.0, {8: "a3-ultragpu-8g"}, "nvidia-h200-141gb"),
    )
}


@dataclass(frozen=True)
class Price:
    machine_type: str
    vertex_usd_per_hour: float | None  # Vertex AI custom training list price; None = not found
    compute_engine_usd_per_hour: float | None  # Compute Engine on-demand list price; None = not found
    source: str
    seen: str  # date the figure was published/seen
    note: str = ""


_CYCLENERD = "github.com/Cyclenerd/google-cloud-pricing-cost-calculator pricing.yml@082120d2"
_SILYBENCH = "github.com/tgarg01/silybench-data derived/csv/gpu_prices.csv (Cloud Billing catalog)"

# us-central1, USD per hour. vertex_usd_per_hour is None everywhere: see the module docstring.
PRICES: dict[str, Price] = {
    p.machine_type: p
    for p in (
        Price("g2-standard-8", None, 0.853624271, _CYCLENERD, "2024-11-07"),
        Price("g2-standard-24", None, 2.000832574, _CYCLENERD, "2024-11-07"),
        Price("g2-standard-48", None, 4.001665148, _CYCLENERD, "2024-11-07"),
        Price("g2-standard-96", None, None, "not found", "", "no us-central1 figure found"),
        Price("a2-highgpu-1g", None, 3.673385, _CYCLENERD, "2024-11-07"),
        Price("a2-highgpu-2g", None, 7.34677, _CYCLENERD, "2024-11-07"),
        Price("a2-highgpu-4g", None, None, "not found", "", "no us-central1 figure found"),
        Price("a2-highgpu-8g", None, 29.38708, _CYCLENERD, "2024-11-07"),
        Price("a2-megagpu-16g", None, 55.739504, _CYCLENERD, "2024-11-07"),
        Price(
            "a2-ultragpu-1g", None, 5.06879789041096, _CYCLENERD, "2024-11-07", "includes 375 GB local SSD"
        ),
        Price(
            "a2-ultragpu-2g", None, 10.1375957808219, _CYCLENERD, "2024-11-07", "includes 750 GB local SSD"
        ),
        Price("a2-ultragpu-4g", None, None, "not found", "", "no us-central1 figure found"),
        Price("a2-ultragpu-8g", None, None, "not found", "", "no us-central1 figure found"),
        Price(
            "a3-highgpu-1g",
            None,
            10.9791,
            _SILYBENCH,
            "2026-09-26",
            "GPU + 26 vCPU + 234 GiB, boot disk excluded; Spot / flex-start only",
        ),
        Price("a3-highgpu-2g", None, 22.1224999756438, _CYCLENERD, "2024-11-07", "Spot / flex-start only"),
        Price(
            "a3-highgpu-4g",
            None,
            44.2449999512877,
            _CYCLENERD,
            "2024-11-07",
            "Spot / flex-start only; hour = the row's month / 730",
        ),
        Price("a3-highgpu-8g", None, 88.4899999025753, _CYCLENERD, "2024-11-07", "includes 6 TB local SSD"),
        Price(
            "a3-megagpu-8g", None, None, "not found", "", "not offered in us-central1 in the 2024-11 export"
        ),
        Price("a3-ultragpu-8g", None, None, "not found", "", "8 x H200: no list price found"),
    )
}

# Known Vertex AI per-accelerator training rate (the machine part is billed on top); kept for the
# report, not used in the cost because the machine part is unknown.
VERTEX_ACCELERATOR_USD_PER_HOUR = {"NVIDIA_H100_80GB": 9.79655057}

# --- throughput ASSUMPTIONS (documented, overridable through PreflightOptions.tokens_per_s) ---------
# Model FLOPs utilisation a Hugging Face Trainer + SDPA fine-tune reaches on these GPUs. Published
# large-model training runs report 0.3-0.5; single-GPU fine-tunes of small models with short sequences
# sit lower. 0.30 is an assumption, not a measurement of this project.
ASSUMED_MFU = 0.30
# bitsandbytes NF4 matmuls dequantize every weight on every forward/backward pass: QLoRA is slower than
# LoRA on the same GPU. Factor applied to the tokens/s: an assumption.
QLORA_SPEED_FACTOR = 0.6
# Data-parallel scaling: each extra GPU adds this share of one GPU's throughput (all-reduce cost).
DDP_EFFICIENCY = 0.9
# Floor on the time of one micro-batch forward + backward: kernel launches and Python overhead of the HF
# Trainer dominate for small models (under ~100 M parameters), where the FLOP-based rate would be
# absurdly high. An assumption, seconds per micro-step.
MIN_SECONDS_PER_MICRO_STEP = 0.03
# Fixed time per run that does not scale with tokens: image pull, model download and load, saving.
OVERHEAD_HOURS = 0.15


def machine_type_for(accelerator_type: str, count: int) -> str | None:
    """The machine type that carries ``count`` accelerators of this type; None when there is none."""
    acc = ACCELERATORS.get(accelerator_type)
    return acc.machine_types.get(count) if acc else None


def hourly_price(machine_type: str) -> tuple[float | None, str]:
    """(USD per hour, basis): the Vertex list price when known, else the Compute Engine list price
    (a lower bound of the Vertex bill), else (None, "no price found")."""
    price = PRICES.get(machine_type)
    if price is None:
        return None, f"{machine_type} is not in components/preflight/prices.py"
    if price.vertex_usd_per_hour is not None:
        return price.vertex_usd_per_hour, f"Vertex AI list price ({price.source}, {price.seen})"
    if price.compute_engine_usd_per_hour is not None:
        return (
            price.compute_engine_usd_per_hour,
            f"Compute Engine list price, a lower bound of Vertex ({price.source}, {price.seen})",
        )
    return None, f"no price found for {machine_type} ({price.note})"


def assumed_tokens_per_s(accelerator_type: str, count: int, flops_per_token: float, method: str) -> float:
    """Training tokens per second on ``count`` accelerators: count x peak x MFU / FLOPs per token (an
    ASSUMPTION built from ASSUMED_MFU, QLORA_SPEED_FACTOR and DDP_EFFICIENCY)."""
    acc = ACCELERATORS[accelerator_type]
    gpus = 1 + DDP_EFFICIENCY * (count - 1)
    speed = QLORA_SPEED_FACTOR if method == "qlora" else 1.0
    return gpus * acc.bf16_tflops * 1e12 * ASSUMED_MFU * speed / flops_per_token
