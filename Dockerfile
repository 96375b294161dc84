# zhost on Debian bookworm: a build stage and a small non-root runtime stage.
# The RUN steps are the README's install steps (tools/install-deps.sh + cmake), checked by
# spec/e2e/test_serve_deploy.py.
#   docker build -t zhost .
#   docker run -d -p 8080:8080 -v zhost-state:/var/lib/zhost -v /path/secrets:/etc/zhost/secrets:ro zhost
FROM debian:bookworm AS build
WORKDIR /src
COPY tools/install-deps.sh tools/install-deps.sh
RUN tools/install-deps.sh build
COPY . .
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j2
RUN cmake --install build --prefix /opt/zhost

FROM debian:bookworm
COPY tools/install-deps.sh /tmp/install-deps.sh
RUN /tmp/install-deps.sh runtime && rm /tmp/install-deps.sh
RUN useradd --system --home /var/lib/zhost --shell /usr/sbin/nologin zhost && install -d -o zhost -g zhost -m 0750 /var/lib/zhost
COPY --from=build /opt/zhost /opt/zhost
COPY conf/zhost.docker.conf /etc/zhost/zhost.conf
ENV ZHOST_CONF=/etc/zhost/zhost.conf PATH=/opt/zhost/bin:$PATH
USER zhost
WORKDIR /var/lib/zhost
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
STOPSIGNAL SIGTERM
CMD ["zhost", "serve", "--conf", "/etc/zhost/zhost.conf", "--secrets", "/etc/zhost/secrets"]
