"""`python -m models`: build every preset (on the meta device, no memory) and print its parameter count."""

from __future__ import annotations

from models import PRESETS, build_model


def main() -> None:
    print(f"{'preset':<12} {'params':>14} {'enc/dec layers':>15} {'dim':>6} {'resnet':>10}")
    for name, cfg in PRESETS.items():
        model = build_model(cfg, device="meta")
        params = sum({id(p): p.numel() for p in model.parameters()}.values())
        layers = f"{cfg.encoder_layers}/{cfg.decoder_layers}"
        print(f"{name:<12} {params:>14,} {layers:>15} {cfg.encoder_embed_dim:>6} {cfg.resnet_type:>10}")


if __name__ == "__main__":
    main()
