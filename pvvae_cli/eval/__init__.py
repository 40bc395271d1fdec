"""Evaluation: reconstruction/prediction quality of models side by side, speed, and set-vs-set FVD/KVD.

- ``protocol``: which clips, frames and size (``EvalProtocol``, ``load_clip``);
- ``reconstruction``: ``evaluate``, every model on the same clips, and ``open_metrics``;
- ``speed``: the inference speed protocol (``SpeedProtocol``, ``measure_speed``);
- ``report``: ``EvalReport`` as markdown, JSON and per-video CSV;
- ``sets``: FVD/KVD between two sets of videos (``compare_video_sets``), also for generated videos.
"""
