"""The gateway's frozen settings: built by the CLI (``server_tgi.py``) or by tests, read by ``create_app``."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DEFAULT_SAVE_FOLDER", "Settings"]

DEFAULT_SAVE_FOLDER = "/tmp/functionary-tgi-models"


@dataclass(frozen=True)
class Settings:
    model: str
    endpoints: tuple[str, ...] = ("http://127.0.0.1:8080",)
    host: str = "127.0.0.1"
    port: int = 8000
    prompt_template: str | None = None
    served_model_name: str | None = None
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # never printed
    max_total_tokens: int | None = None
    max_input_tokens: int | None = None
    startup_timeout: float = 600.0
    remote_model_save_folder: str = DEFAULT_SAVE_FOLDER
    no_launch: bool = False
    emulator: bool = False
    revision: str | None = None
    tgi_image: str | None = None
    gpus: str = "all"
    shm_size: str = "1g"
    num_shard: int | None = None
    quantize: str | None = None
    dtype: str | None = None
    keep_container: bool = False
    replace: bool = False
    launcher_args: tuple[str, ...] = ()
    max_body_bytes: int = 8 * 1024 * 1024
    max_top_n_tokens: int = 5
    request_timeout: float | None = 600.0
    grammar: str = "auto"  # auto | on | off: which requests get a whole-turn TGI grammar (docs/grammar.md)
    cors_origins: tuple[str, ...] = ()
    log_level: str = "info"
    # cluster and operations (README "Cluster and operations")
    max_in_flight_per_endpoint: int | None = None
    queue_timeout: float = 30.0
    health_interval: float = 5.0
    eject_after: int = 2
    log_format: str = "text"
    # scale (docs/deploy.md)
    workers: int = 1
    replicas: int = 1
    gpus_per_replica: int | None = None
    endpoint_dns: tuple[str, ...] = ()
    dns_interval: float = 10.0
    extra: dict = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.model
