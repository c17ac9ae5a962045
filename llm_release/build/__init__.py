"""TensorRT-LLM engine builds on GPU pods: the command plan, the in-pod runner, the pod spec.

Pure planning (trtllm.py, pod.py) is separate from execution (pod_runner.py) so the plan and
the manifest can be checked without a GPU or a cluster. See docs/builds.md.
"""
