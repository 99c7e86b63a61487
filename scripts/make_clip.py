#!/usr/bin/env python3
"""A 100-frame 640x480 test clip for timing `cargo xtask predict` on a whole clip.

The frames are the astronaut scene of the fixtures (a real photograph pasted into a larger
frame) with a smile-like local warp at the mouth that rises and falls, peaking at frame 55;
the head does not move. Written twice: as JPEG frames (quality 90) `OUT/frames/img000.jpg`
.. `img099.jpg`, and as an MJPG AVI `OUT/clip.avi` (30 fps).

    python3 scripts/make_clip.py /tmp/clip100
    hyperfine -w 2 -r 10 \\
      "target/release/xtask predict --weights W --strain-formula reference --frames /tmp/clip100/frames --onset 0" \\
      "target/release/xtask predict --weights W --strain-formula reference --video /tmp/clip100/clip.avi --onset 0"

Needs numpy and OpenCV's Python package (opencv-python-headless).
"""
import argparse
import pathlib

import cv2
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCENE = ROOT / "fixtures" / "frames" / "astronaut_scene_640x480.jpg"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=pathlib.Path, help="output folder")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--peak", type=int, default=55)
    args = ap.parse_args()
    scene = cv2.imread(str(SCENE))
    if scene is None:
        raise SystemExit(f"cannot read {SCENE}")
    h, w = scene.shape[:2]
    (args.out / "frames").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = 364.0, 205.0  # the mouth
    g = np.exp(-(((xx - cx) / 30) ** 2 + ((yy - cy) / 18) ** 2)).astype(np.float32)
    video = cv2.VideoWriter(
        str(args.out / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (w, h)
    )
    for t in range(args.frames):
        a = 2.5 * np.exp(-(((t - args.peak) / 12.0) ** 2))
        # Mouth corners pulled outwards and up (a smile), the head still.
        mx = xx - a * g * np.sign(xx - cx) * np.minimum(np.abs(xx - cx) / 30, 1)
        my = yy + 0.6 * a * g
        f = cv2.remap(
            scene,
            mx.astype(np.float32),
            my.astype(np.float32),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        cv2.imwrite(str(args.out / "frames" / f"img{t:03d}.jpg"), f, [cv2.IMWRITE_JPEG_QUALITY, 90])
        video.write(f)
    video.release()
    print(f"{args.frames} frames (peak {args.peak}) in {args.out}/frames and {args.out}/clip.avi")


if __name__ == "__main__":
    main()
