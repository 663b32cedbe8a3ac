#!/bin/bash
# bench/w2-alternating.sh RUNS [EXTRA_CFG]: the W2 job (1 GiB) through `ftpdrop once` on the
# interop vsftpd (scripts/interop/servers.sh start target/interop), alternating with
# `curl -T`; prints wall, user and system seconds and the segments ftpdrop used. EXTRA_CFG
# is JSON members added to the config, e.g. ,"segment_after_ms":0. Learned facts are kept
# between runs, as in service. Needs target/bench-data/w2 (bench/compare.sh makes it).
cd "$(dirname "$0")/.."; set -a; . target/interop/servers.env; set +a
RUNS=${1:-3}; EXTRA=${2:-}; BIN=${BIN:-target/release/ftpdrop}
W2=$(ls target/bench-data/w2/* 2>/dev/null | head -1); [ -n "$W2" ] || W2=$(ls target/bench-data/w2*.bin | head -1)
ST=$(mktemp -d); trap 'rm -rf $ST' EXIT
python3 bench/benchtool.py job $ST/job.json $(dirname $W2) "" $FTPDROP_VSFTPD_HOST $FTPDROP_VSFTPD_PORT $FTPDROP_VSFTPD_USER $FTPDROP_VSFTPD_PASS
cfg() { mkdir -p $ST/files $ST/checked; rm -rf $ST/files/* $ST/checked/*; echo "{\"inbox\":\"$ST/files\",\"checked\":\"$ST/checked\",\"max_connections\":8,\"max_connections_per_server\":8,\"max_concurrent_jobs\":1 $EXTRA}" > $ST/cfg.json; cp $ST/job.json $ST/files/job.json; touch -d '-1 min' $ST/files/job.json; }
clean() { find $FTPDROP_VSFTPD_ROOT -mindepth 1 -delete; sync; }
for r in $(seq $RUNS); do
  for t in ftpdrop curl; do
    clean
    if [ $t = ftpdrop ]; then cfg; /usr/bin/time -f "%e %U %S" -o $ST/time $BIN once --config $ST/cfg.json > $ST/run-$r.log 2>&1
    else /usr/bin/time -f "%e %U %S" -o $ST/time curl -sS --disable-epsv --user "$FTPDROP_VSFTPD_USER:$FTPDROP_VSFTPD_PASS" -T $W2 "ftp://$FTPDROP_VSFTPD_HOST:$FTPDROP_VSFTPD_PORT/big.bin"; fi
    echo "$t $(cat $ST/time) segs=$(grep -o 'segments=[0-9]*' $ST/run-$r.log 2>/dev/null | tail -1)"
  done
done
