# Types for CPython's _signal, the C half of `signal`, which typeshed does not describe.
# pyinit imports _signal instead of signal, whose enum import costs PID 1's start-up
# (pyinit/process.py); the functions and numbers are the same objects.
from signal import ITIMER_REAL as ITIMER_REAL
from signal import NSIG as NSIG
from signal import SIG_DFL as SIG_DFL
from signal import SIG_SETMASK as SIG_SETMASK
from signal import SIGALRM as SIGALRM
from signal import SIGCHLD as SIGCHLD
from signal import SIGCONT as SIGCONT
from signal import SIGHUP as SIGHUP
from signal import SIGINT as SIGINT
from signal import SIGKILL as SIGKILL
from signal import SIGPIPE as SIGPIPE
from signal import SIGPWR as SIGPWR
from signal import SIGQUIT as SIGQUIT
from signal import SIGSTOP as SIGSTOP
from signal import SIGTERM as SIGTERM
from signal import SIGUSR1 as SIGUSR1
from signal import SIGUSR2 as SIGUSR2
from signal import SIGXFSZ as SIGXFSZ
from signal import pthread_sigmask as pthread_sigmask
from signal import setitimer as setitimer
from signal import signal as signal
