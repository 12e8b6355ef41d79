# Asterisk 22 from Debian's archive (sid carries 22.x), with only what the contact center needs.
# Configuration is not baked in: docker-compose mounts the files `ccpbx-ctl setup` rendered into var/.
FROM debian:sid-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends asterisk asterisk-modules asterisk-core-sounds-en-gsm \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /run/asterisk
CMD ["/usr/sbin/asterisk", "-f", "-n"]
