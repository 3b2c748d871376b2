// SPDX-License-Identifier: GPL-2.0-only
/*
 * Test fixture for the module-glue end-to-end case: a hand-written
 * replacement for fs/proc/cmdline.c:cmdline_proc_show() in the pre-link form
 * the relocator produces.
 *
 * - It reads saved_command_line, which vmlinux does not export, through the
 *   livepatch symbol name `.klp.sym.vmlinux.saved_command_line,0`: the
 *   module loader cannot resolve it, livepatch must.
 * - It prints a marker followed by that command line, so the patched
 *   /proc/cmdline shows both that the new function runs and that the
 *   livepatch relocation was resolved to the real variable.
 * - The glue reaches it through the global alias __kpb_new_0.
 *
 * Compiled with the test kernel's own flags for fs/proc/cmdline.o (so it has
 * its __fentry__ call and endbr64), plus -ffunction-sections.
 */
#include <linux/seq_file.h>

/* The quotes make the assembler accept the ',' in the symbol name. */
extern char *kpb_saved_command_line
	__asm__("\".klp.sym.vmlinux.saved_command_line,0\"");

static int cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "kpbuild-module-glue: %s\n", kpb_saved_command_line);
	return 0;
}

extern typeof(cmdline_proc_show) __kpb_new_0
	__attribute__((alias("cmdline_proc_show")));
