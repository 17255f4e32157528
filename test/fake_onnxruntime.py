"""A stand-in for onnxruntime-gpu: the documented calls the onnxruntime backend makes, with the
providers each session ends up running chosen by the test."""
import types


class FakeOrt:
    """``import_onnxruntime``'s module: sessions 'run' on ``running[graph]`` (graph "encoder" or "dit_step",
    from the ONNX file's name); ``sessions`` keeps each session's path, providers and provider options."""

    def __init__(self, available: list[str], running: dict[str, list[str]]):
        self.available, self.running, self.sessions = available, running, []

    def get_available_providers(self):
        return list(self.available)

    @staticmethod
    def SessionOptions():
        return types.SimpleNamespace()

    def InferenceSession(self, path, session_options, providers, provider_options):
        graph = "encoder" if "encoder" in path else "dit_step"
        session = types.SimpleNamespace(path=path, providers=providers, provider_options=provider_options,
                                        get_providers=lambda: list(self.running[graph]))
        self.sessions.append(session)
        return session
