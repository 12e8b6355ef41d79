# The contact-center service (AMI, FastAGI, event store, REST API), installed with its pinned dependencies.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt ./
COPY telephony telephony
COPY acd acd
COPY ivr ivr
COPY reporting reporting
COPY web web
COPY service service
COPY ops ops
COPY sim sim
COPY asterisk-conf asterisk-conf
RUN pip install --no-cache-dir -c constraints.txt .
CMD ["ccpbx", "--config", "/app/var/ccpbx.toml"]
