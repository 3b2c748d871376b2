/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * kpatch-syscall.h: KPATCH_SYSCALL_DEFINE0..6, for patches written for
 * kpatch-build that change a system call; kpbuild's implementation.
 *
 * A patch replaces SYSCALL_DEFINEn(name, ...) by KPATCH_SYSCALL_DEFINEn(name,
 * ...) in the file it changes. Why: the kernel's SYSCALL_DEFINEn (x86_64)
 * writes the body as `static inline long __do_sys_NAME(...)`, and the
 * kernel's `inline` implies notrace. When the compiler keeps __do_sys_NAME
 * out of line it has no ftrace entry, so the livepatch core cannot redirect
 * it and kpbuild refuses the change.
 *
 * Here the body is always inlined into its callers, the wrappers
 * __se_sys_NAME and __x64_sys_NAME (__ia32_sys_NAME with IA32 emulation),
 * which have ftrace entries: the change lands in functions that keep the
 * names the running kernel has, so they pair with the originals and are
 * patched there. The out-of-line __do_sys_NAME of the running kernel, if
 * any, is no longer called by the patched code. The syscall's metadata
 * (SYSCALL_METADATA, with CONFIG_FTRACE_SYSCALLS) is the kernel's own, so
 * it equals the original and is no change.
 *
 * SYSCALL_DEFINE0's body is an ordinary traced function already: the
 * 0-argument form is the kernel's own. Other architectures get the kernel's
 * SYSCALL_DEFINEn unchanged.
 */
#ifndef _KPBUILD_KPATCH_SYSCALL_H
#define _KPBUILD_KPATCH_SYSCALL_H

#include "kpatch-macros.h"

#define KPATCH_SYSCALL_DEFINE0(sname) SYSCALL_DEFINE0(sname)
#define KPATCH_SYSCALL_DEFINE1(name, ...) KPATCH_SYSCALL_DEFINEx(1, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE2(name, ...) KPATCH_SYSCALL_DEFINEx(2, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE3(name, ...) KPATCH_SYSCALL_DEFINEx(3, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE4(name, ...) KPATCH_SYSCALL_DEFINEx(4, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE5(name, ...) KPATCH_SYSCALL_DEFINEx(5, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE6(name, ...) KPATCH_SYSCALL_DEFINEx(6, _##name, __VA_ARGS__)

#ifdef CONFIG_X86_64

#define KPATCH_SYSCALL_DEFINEx(x, sname, ...)					\
	SYSCALL_METADATA(sname, x, __VA_ARGS__)					\
	__KPB_KPATCH_SYSCALL_DEFINEx(x, sname, __VA_ARGS__)

/*
 * The kernel's x86_64 __SYSCALL_DEFINEx (arch/x86/include/asm/
 * syscall_wrapper.h) with one difference: __do_sys_NAME is always inlined.
 */
#define __KPB_KPATCH_SYSCALL_DEFINEx(x, name, ...)				\
	static long __se_sys##name(__MAP(x, __SC_LONG, __VA_ARGS__));		\
	static __always_inline long						\
	__do_sys##name(__MAP(x, __SC_DECL, __VA_ARGS__));			\
	__X64_SYS_STUBx(x, name, __VA_ARGS__)					\
	__IA32_SYS_STUBx(x, name, __VA_ARGS__)					\
	static long __se_sys##name(__MAP(x, __SC_LONG, __VA_ARGS__))		\
	{									\
		long ret = __do_sys##name(__MAP(x, __SC_CAST, __VA_ARGS__));	\
		__MAP(x, __SC_TEST, __VA_ARGS__);				\
		__PROTECT(x, ret, __MAP(x, __SC_ARGS, __VA_ARGS__));		\
		return ret;							\
	}									\
	static __always_inline long						\
	__do_sys##name(__MAP(x, __SC_DECL, __VA_ARGS__))

#else

#define KPATCH_SYSCALL_DEFINEx(x, sname, ...) SYSCALL_DEFINEx(x, sname, __VA_ARGS__)

#endif

#endif /* _KPBUILD_KPATCH_SYSCALL_H */
