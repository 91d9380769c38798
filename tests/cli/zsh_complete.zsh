# zsh zcomp2.zsh SCRIPT WORDS: what zsh shows after WORDS and a Tab, with SCRIPT loaded.
zmodload zsh/zpty || exit 1
zpty z zsh -f -i
zpty -w z "PROMPT='> '; autoload -U compinit; compinit -u -d ${ZDUMP:-/tmp/.zcompdump-ftsweep}; source $1; print ready"
local all='' out
while [[ $all != *ready* ]]; do zpty -r -t z out && all+=$out || sleep 0.1; done
zpty -w -n z "$2"$'\t'
sleep 1
all=''
while zpty -r -t z out; do all+=$out; done
print -r -- "$all"
zpty -d z
