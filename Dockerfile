# The audiosim image: the CLI, Datasette with the plugin, and the Label Studio ML backend. CPU torch is pinned so the image stays small.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libsndfile1 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install --no-cache-dir ".[labelstudio]" \
 && pip install --no-cache-dir --no-deps aisfx==0.1.2 label-studio-ml==1.0.9
ENV AUDIOSIM_MODEL_DIR=/models
VOLUME ["/models", "/sounds"]
ENTRYPOINT ["audiosim"]
CMD ["--help"]
